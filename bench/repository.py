"""What the deduplicated repository costs and saves: a full backup, a trading day's
backup, 30 days of them, a restore, memory, and a live writer.

    python bench/repository.py [--sizes 100M,1G] [--repeat N] [--days D] [--json] [--dir PATH]

For each size (default ``100M``; ``K``, ``M``, ``G`` are binary units) the script builds
a SQLite database shaped like a trading bot's: ``trades`` and ``orders`` with
freqtrade's columns that matter here, a text column of random hex standing in for the
rest (trades about 330 bytes a row, orders about 250), three orders per trade, and
freqtrade's indexes (trades by pair and by is_open, orders by trade, by status, by pair
and open flag, and unique by pair and order id). Rows go in in batches, trades and
their orders interleaved, until the file reaches the size; then WAL mode and
``PRAGMA wal_checkpoint(TRUNCATE)``. The repository is ``Repository.of(<dir>/catalog)``
with the default chunk size and no compression. Then, in one process:

1. **Floor**, the least a verified full copy costs: ``shutil.copyfile`` + fsync of the
   copy + sha256 of the copy, and separately ``PRAGMA quick_check`` of that copy; the
   floor is the larger of the two (they could run side by side).
2. **Full backup into an empty repository**: the database copied to a temporary file
   (a file copy: the database is idle and checkpointed, which is what dbguard's
   default snapshot copy amounts to then), ``quick_check`` of the copy, then
   ``Repository.store()`` of it, timed by step. Interleaved with the floor over N
   repeats (default 3), the order alternating; every run starts with the source read
   once (warm) and ``sync`` run, both untimed. Ratio: total / floor of the same repeat.
3. **A trading day**, as a bot makes it: the orders of the trades still open are filled
   and those trades closed, then 1 % of the database's rows are appended (a quarter
   trades, three orders each; a tenth of the new trades stay open with open orders).
   Then the same backup again, interleaved with ``cp`` + fsync of the database over N
   repeats; every repeat but the last is undone with ``Repository.collect()``. Figures:
   the bytes the backup added (``Stored.added``) / the database's size; ``store()``
   alone / cp + fsync; copy + ``store()`` (the backup without quick_check) / cp +
   fsync; the whole backup. The worst case, without a target: as many rows as the day
   touched, updated at random across both tables (non-indexed columns), on a copy of
   the database, stored and then collected again.
4. **30 days**: 29 more such days, each stored straight from the idle, checkpointed
   database file. The repository's size (``stored_bytes()``) plus an estimate of the
   manifests (``67 bytes * chunks + 2 KiB`` each, one per backup: the full one and the
   30 days) / the size of the database at the end, beside what the same backups take
   as full copies.
5. **Restore** of the last backup: ``read_into`` a new file + fsync, against
   ``copyfile`` + fsync from a full copy of the same content (and, for reference, the
   same + sha256), interleaved over N repeats with the packs and the copy warm.
6. **Peak memory**: ``ru_maxrss`` growth across one ``store()`` of the database into an
   empty repository, in a fresh child process that forks once and measures in the
   fork (on Linux ``ru_maxrss`` survives exec, so a child started by this larger
   process would start with its peak).
7. **A live writer**: a separate process commits one small row into ``orders`` every
   5 ms (Python's ``sqlite3`` defaults, busy timeout 30 s) while the full backup runs N
   times, each into a new empty repository; the copy is SQLite's backup API here, as
   the database is not idle. p99 and max of the commits that overlapped a backup,
   beside those of the second before the first.

The 1 GiB size needs about 8 GiB free in --dir (default: a new temporary directory,
removed afterwards; with --dir a new subdirectory of PATH, removed afterwards).

A benchmark is not a test: the target lines say PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tradingdb import (
    MIB,
    PAIRS,
    fsync_path,
    machine,
    maxrss_mib,
    no_nan,
    parse_size,
    remove,
    sha256_of,
    size_label,
    spread,
    sync,
    warm,
)

from dbguard_plugin.catalog.repository import Repository, Stored

#: The issue's targets (#15).
TARGET_FULL_OVER_FLOOR = 1.15
TARGET_DAY_ADDED_SHARE = 0.03
TARGET_DAY_OVER_CP = 0.5
TARGET_REPOSITORY_OVER_DB = 1.5
TARGET_RESTORE_OVER_COPY = 1.2
TARGET_RSS_MIB = 64.0
TARGET_WRITER_P99_MS = 20.0
TARGET_WRITER_MAX_MS = 100.0

DAYS = 30
#: A day appends this share of the database's rows (of the first day, every day: a bot
#: trades at a steady rate while its database grows).
DAY_SHARE = 0.01
#: The share of a day's new trades still open at its end (closed the next day).
OPEN_SHARE = 0.1
#: The manifest estimate: its chunk list and the rest of its JSON.
MANIFEST_PER_CHUNK = 67
MANIFEST_BASE = 2048

WRITER_PERIOD_S = 0.005
WRITER_BEFORE_S = 1.0
WRITER_AFTER_S = 0.5

EPOCH = 1_700_000_000
TRADE_EVERY_S = 600

T = TypeVar("T")

SCHEMA = """
CREATE TABLE trades (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, pair TEXT NOT NULL,
    base_currency TEXT, stake_currency TEXT, is_open BOOLEAN NOT NULL,
    fee_open REAL NOT NULL, fee_close REAL NOT NULL, open_rate REAL NOT NULL,
    close_rate REAL, amount REAL NOT NULL, stake_amount REAL NOT NULL,
    open_date DATETIME NOT NULL, close_date DATETIME, strategy TEXT, enter_tag TEXT,
    exit_reason TEXT, timeframe INTEGER, leverage REAL NOT NULL, is_short BOOLEAN NOT NULL,
    close_profit REAL, realized_profit REAL, funding_fees REAL, notes TEXT);
CREATE INDEX ix_trades_pair ON trades (pair);
CREATE INDEX ix_trades_is_open ON trades (is_open);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, ft_trade_id INTEGER NOT NULL REFERENCES trades (id),
    ft_order_side TEXT NOT NULL, ft_pair TEXT NOT NULL, ft_is_open BOOLEAN NOT NULL,
    order_id TEXT NOT NULL, status TEXT, symbol TEXT, order_type TEXT, side TEXT,
    price REAL, average REAL, amount REAL, filled REAL, remaining REAL, cost REAL,
    order_date DATETIME, order_filled_date DATETIME, order_update_date DATETIME,
    ft_fee_base REAL, ft_order_tag TEXT);
CREATE INDEX ix_orders_ft_trade_id ON orders (ft_trade_id);
CREATE INDEX ix_orders_status ON orders (status);
CREATE INDEX ix_orders_ft_is_open ON orders (ft_pair, ft_is_open);
CREATE UNIQUE INDEX uq_orders_pair_order_id ON orders (ft_pair, order_id);
"""

# Rows are generated by SQLite itself (a recursive CTE and random()), much faster than
# building them in Python. ?1 is the first id, ?2 the row count, ?3 the first trade id
# that is still open.
_SERIES = "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1 + ?2 - 1)"
_PAIRS = json.dumps(PAIRS)


def _pair(trade: str) -> str:
    return f"json_extract('{_PAIRS}', '$[' || (({trade}) % {len(PAIRS)}) || ']')"


_RATE = "(abs(random()) % 10000000) / 100.0"

FILL_TRADES = f"""
INSERT INTO trades
{_SERIES}
SELECT i, 'binance', {_pair('i')}, substr({_pair('i')}, 1, instr({_pair('i')}, '/') - 1),
    'USDT', i >= ?3, 0.001, 0.001, {_RATE}, CASE WHEN i >= ?3 THEN NULL ELSE {_RATE} END,
    (abs(random()) % 1000000) / 10000.0, 100.0 + (abs(random()) % 90000) / 100.0,
    datetime({EPOCH} + i * {TRADE_EVERY_S}, 'unixepoch'),
    CASE WHEN i >= ?3 THEN NULL
         ELSE datetime({EPOCH} + i * {TRADE_EVERY_S} + 3600, 'unixepoch') END,
    'SampleStrategy', CASE i % 3 WHEN 0 THEN 'rsi_cross' WHEN 1 THEN 'ema_break' END,
    CASE WHEN i >= ?3 THEN NULL ELSE 'roi' END, 5, 1.0, 0,
    CASE WHEN i >= ?3 THEN NULL ELSE (abs(random()) % 2000) / 10000.0 - 0.1 END,
    (abs(random()) % 20000) / 100.0 - 100, 0.0, hex(randomblob(60))
FROM s
"""

FILL_ORDERS = f"""
INSERT INTO orders
{_SERIES}
SELECT i, (i + 2) / 3, CASE i % 3 WHEN 1 THEN 'entry' WHEN 2 THEN 'exit' ELSE 'stoploss' END,
    {_pair('(i + 2) / 3')}, (i + 2) / 3 >= ?3,
    printf('%d-%04d', 1000000 + i, abs(random()) % 10000),
    CASE WHEN (i + 2) / 3 >= ?3 THEN 'open' ELSE 'closed' END, {_pair('(i + 2) / 3')},
    CASE i % 3 WHEN 0 THEN 'stop_loss_limit' ELSE 'limit' END,
    CASE i % 3 WHEN 1 THEN 'buy' ELSE 'sell' END,
    {_RATE}, {_RATE}, (abs(random()) % 1000000) / 10000.0,
    CASE WHEN (i + 2) / 3 >= ?3 THEN 0.0 ELSE (abs(random()) % 1000000) / 10000.0 END,
    0.0, (abs(random()) % 100000) / 100.0,
    datetime({EPOCH} + i * {TRADE_EVERY_S // 3}, 'unixepoch'),
    CASE WHEN (i + 2) / 3 >= ?3 THEN NULL
         ELSE datetime({EPOCH} + i * {TRADE_EVERY_S // 3} + 5, 'unixepoch') END,
    datetime({EPOCH} + i * {TRADE_EVERY_S // 3} + 5, 'unixepoch'), NULL,
    hex(randomblob(20))
FROM s
"""

# The bot's exits of the day: the open trades' orders fill, then the trades close.
FILL_OPEN_ORDERS = """
UPDATE orders SET status = 'closed', ft_is_open = 0, filled = amount, remaining = 0,
    average = price, cost = price * amount, order_filled_date = datetime(?1, 'unixepoch'),
    order_update_date = datetime(?1, 'unixepoch')
WHERE ft_trade_id IN (SELECT id FROM trades WHERE is_open = 1) AND status = 'open'
"""
CLOSE_OPEN_TRADES = """
UPDATE trades SET is_open = 0, close_rate = open_rate * 1.01,
    close_date = datetime(?1, 'unixepoch'), exit_reason = 'roi', close_profit = 0.01,
    realized_profit = stake_amount * 0.01
WHERE is_open = 1
"""

WRITER_INSERT = (
    "INSERT INTO orders (ft_trade_id, ft_order_side, ft_pair, ft_is_open, order_id, status, "
    "symbol, order_type, side, price, amount, filled, remaining, cost, order_date) "
    "VALUES (1, 'entry', 'BTC/USDT', 1, ?, 'open', 'BTC/USDT', 'limit', 'buy', 64000.0, "
    "0.01, 0.0, 0.01, 0.0, datetime('now'))"
)


@dataclass
class Book:
    """Where the bot's trading stands: the next trade id and a day's volume."""

    next_trade: int
    day_trades: int

    @property
    def open_trades(self) -> int:
        return max(1, int(self.day_trades * OPEN_SHARE))


# -- helpers ----------------------------------------------------------------------------


def timed(func: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of *values* (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def ratios(values: list[float], bases: list[float]) -> dict[str, float]:
    """Spread of the per-repeat ratios: each value against the baseline of its repeat."""
    return spread([v / b for v, b in zip(values, bases, strict=True)])


def settle(source: Path, *leftovers: Path) -> None:
    """The same start for every timed run: no dirty pages left by the previous one, the
    source in the page cache."""
    remove(*leftovers)
    sync()
    warm(source)
    gc.collect()


def quick_check(path: Path) -> None:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
    finally:
        conn.close()
    if result != [("ok",)]:
        raise RuntimeError(f"{path}: quick_check says {result[:3]}")


def copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    fsync_path(dst)


def copy_fsync_sha256(src: Path, dst: Path) -> None:
    copy_fsync(src, dst)
    sha256_of(dst)


def copy_backup_api(src: Path, dst: Path) -> None:
    """A consistent copy while another process writes; the temporary needs no fsync."""
    source = sqlite3.connect(src)
    target = sqlite3.connect(dst)
    try:
        target.execute("PRAGMA synchronous=OFF")
        source.backup(target, pages=-1)
    finally:
        target.close()
        source.close()


def chunks_of(backups: Iterable[Stored]) -> set[str]:
    return {chunk for stored in backups for chunk in stored.chunks}


def undo(catalog: Path, kept: list[Stored]) -> None:
    """Drop the chunks of a measured backup that is not kept, as prune would."""
    collected = Repository.of(catalog).collect(chunks_of(kept))
    if collected.deferred:
        raise RuntimeError(f"collection deferred: {collected.deferred}")


# -- the database -----------------------------------------------------------------------


def build_database(path: Path, target: int) -> tuple[dict[str, Any], Book]:
    """A bot's trades and orders, about *target* bytes, WAL mode, checkpointed."""
    remove(path)
    started = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-131072")
        conn.executescript(SCHEMA)
        batch = max(500, min(50_000, target // 20_000))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        trades = 0
        no_open = 1 << 62  # every built trade closed; the newest reopen below
        while conn.execute("PRAGMA page_count").fetchone()[0] * page_size < target:
            conn.execute("BEGIN")
            conn.execute(FILL_TRADES, (trades + 1, batch, no_open))
            conn.execute(FILL_ORDERS, (3 * trades + 1, 3 * batch, no_open))
            conn.execute("COMMIT")
            trades += batch
        book = Book(trades + 1, max(1, int(4 * trades * DAY_SHARE) // 4))
        reopen(conn, trades - book.open_trades)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    fsync_path(path)
    return {"bytes": path.stat().st_size, "page_size": page_size, "pages": pages,
            "trades": trades, "orders": 3 * trades, "day_trades": book.day_trades,
            "build_s": round(time.monotonic() - started, 1)}, book


def reopen(conn: sqlite3.Connection, last_closed: int) -> None:
    """Leave the newest trades open, with open orders, as a running bot has them."""
    conn.execute("BEGIN")
    conn.execute("UPDATE trades SET is_open = 1, close_rate = NULL, close_date = NULL, "
                 "exit_reason = NULL, close_profit = NULL WHERE id > ?", (last_closed,))
    conn.execute("UPDATE orders SET status = 'open', ft_is_open = 1, filled = 0.0, "
                 "remaining = amount, order_filled_date = NULL WHERE ft_trade_id > ?",
                 (last_closed,))
    conn.execute("COMMIT")


def trading_day(db: Path, book: Book) -> int:
    """One day of the bot's writes, then a checkpoint; the rows it touched."""
    first, count = book.next_trade, book.day_trades
    still_open = first + count - book.open_trades
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        now = EPOCH + first * TRADE_EVERY_S
        conn.execute("BEGIN")
        filled = conn.execute(FILL_OPEN_ORDERS, (now,)).rowcount
        closed = conn.execute(CLOSE_OPEN_TRADES, (now,)).rowcount
        conn.execute(FILL_TRADES, (first, count, still_open))
        conn.execute(FILL_ORDERS, (3 * first - 2, 3 * count, still_open))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    book.next_trade += count
    return filled + closed + 4 * count


def scattered_updates(db: Path, rows: int, rng: random.Random) -> None:
    """*rows* rows updated at random across both tables, in proportion to their sizes."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        trades = conn.execute("SELECT max(id) FROM trades").fetchone()[0]
        orders = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
        in_trades = rows * trades // (trades + orders)
        conn.execute("BEGIN")
        conn.executemany("UPDATE trades SET funding_fees = funding_fees + 0.01 WHERE id = ?",
                         [(rng.randint(1, trades),) for _ in range(in_trades)])
        conn.executemany("UPDATE orders SET cost = cost + 0.01 WHERE id = ?",
                         [(rng.randint(1, orders),) for _ in range(rows - in_trades)])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


# -- backups ----------------------------------------------------------------------------


def full_backup(db: Path, snap: Path, catalog: Path) -> tuple[dict[str, float], Stored]:
    """The repository backup of an idle database: copy, quick_check, store(); by step."""
    seconds: dict[str, float] = {}
    seconds["copy"], _ = timed(lambda: shutil.copyfile(db, snap))
    seconds["quick_check"], _ = timed(lambda: quick_check(snap))
    seconds["store"], stored = timed(lambda: Repository.of(catalog).store(snap))
    seconds["total"] = seconds["copy"] + seconds["quick_check"] + seconds["store"]
    remove(snap)
    return seconds, stored


def floor_run(db: Path, out: Path) -> dict[str, float]:
    copy_s, _ = timed(lambda: copy_fsync_sha256(db, out))
    check_s, _ = timed(lambda: quick_check(out))
    remove(out)
    return {"cp + fsync + sha256": copy_s, "quick_check": check_s,
            "floor": max(copy_s, check_s)}


def steps(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: spread([run[key] for run in runs]) for key in runs[0]}


def measure_full(db: Path, work: Path, catalog: Path,
                 repeat: int) -> tuple[dict[str, Any], Stored]:
    """Floor and full backup into an empty repository, interleaved; the last one kept."""
    out, snap = work / "copy.sqlite", work / "snapshot.sqlite"
    floors: list[dict[str, float]] = []
    backups: list[dict[str, float]] = []
    kept: Stored | None = None
    for r in range(repeat):
        for name in ("floor", "backup") if r % 2 == 0 else ("backup", "floor"):
            if name == "backup":
                shutil.rmtree(catalog, ignore_errors=True)  # empty every time; last kept
            settle(db, out, snap)
            if name == "floor":
                floors.append(floor_run(db, out))
            else:
                seconds, kept = full_backup(db, snap, catalog)
                backups.append(seconds)
    assert kept is not None
    sync()
    floor = [run["floor"] for run in floors]
    return {
        "floor": steps(floors), "backup": steps(backups),
        "ratio_floor": ratios([run["total"] for run in backups], floor),
        "store_ratio_floor": ratios([run["store"] for run in backups], floor),
        "added": kept.added, "chunks": len(kept.chunks),
        "runs": {"floor": floors, "backup": backups},
    }, kept


def measure_day(db: Path, work: Path, catalog: Path, kept: list[Stored],
                repeat: int) -> tuple[dict[str, Any], Stored]:
    """The day's backup against cp + fsync, interleaved; all but the last collected."""
    out, snap = work / "copy.sqlite", work / "snapshot.sqlite"
    cps: list[float] = []
    backups: list[dict[str, float]] = []
    stored: Stored | None = None
    for r in range(repeat):
        for name in ("cp", "backup") if r % 2 == 0 else ("backup", "cp"):
            settle(db, out, snap)
            if name == "cp":
                cps.append(timed(lambda: copy_fsync(db, out))[0])
                remove(out)
                continue
            if stored is not None:
                undo(catalog, kept)
            seconds, stored = full_backup(db, snap, catalog)
            backups.append(seconds)
    assert stored is not None
    sync()
    size = db.stat().st_size
    return {
        "bytes": size, "added": stored.added, "added_share": stored.added / size,
        "cp_fsync": spread(cps), "backup": steps(backups),
        "copy_store_s": spread([run["copy"] + run["store"] for run in backups]),
        "store_ratio_cp": ratios([run["store"] for run in backups], cps),
        "copy_store_ratio_cp": ratios([run["copy"] + run["store"] for run in backups], cps),
        "total_ratio_cp": ratios([run["total"] for run in backups], cps),
        "runs": {"cp_fsync": cps, "backup": backups},
    }, stored


def measure_scattered(db: Path, work: Path, catalog: Path, kept: list[Stored],
                      rows: int) -> dict[str, Any]:
    """The worst case: as many rows as the day touched, at random, on a copy."""
    copy = work / "scattered.sqlite"
    shutil.copyfile(db, copy)
    scattered_updates(copy, rows, random.Random(15))
    settle(copy)
    seconds, stored = timed(lambda: Repository.of(catalog).store(copy))
    undo(catalog, kept)
    size = copy.stat().st_size
    remove(copy)
    sync()
    return {"rows": rows, "store_s": seconds, "added": stored.added,
            "added_share": stored.added / size, "bytes": size}


def run_days(db: Path, catalog: Path, kept: list[Stored], book: Book,
             days: int) -> dict[str, Any]:
    """More days, each stored from the idle database; then what the repository holds."""
    store_s: list[float] = []
    for _ in range(days):
        trading_day(db, book)
        sync()
        seconds, stored = timed(lambda: Repository.of(catalog).store(db))
        store_s.append(seconds)
        kept.append(stored)
    repository = Repository.of(catalog).stored_bytes()
    manifests = sum(MANIFEST_PER_CHUNK * len(s.chunks) + MANIFEST_BASE for s in kept)
    size = db.stat().st_size
    shares = [s.added / s.raw_size for s in kept[1:]]
    return {
        "backups": len(kept), "bytes": size, "first_bytes": kept[0].raw_size,
        "repository": repository, "manifests": manifests,
        "ratio_db": (repository + manifests) / size,
        "full_copies": sum(s.raw_size for s in kept),
        "day_added_share": spread(shares), "day_store_s": spread(store_s),
    }


def restore_from_repository(catalog: Path, stored: Stored, out: Path) -> None:
    repository = Repository.of(catalog)
    with repository.reading(), open(out, "wb") as fh:
        size, digest = repository.read_into(stored.chunks, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if (size, digest) != (stored.raw_size, stored.raw_sha256):
        raise RuntimeError("the restored file differs from the backup")


def measure_restore(db: Path, work: Path, catalog: Path, stored: Stored,
                    repeat: int) -> dict[str, Any]:
    """The last backup restored from the repository, and from a full copy of it."""
    full, out = work / "full-copy.sqlite", work / "restored.sqlite"
    copy_fsync(db, full)
    packs = sorted(Repository.of(catalog).packs_dir.rglob("*.pack"))
    variants: dict[str, Callable[[], None]] = {
        "repository": lambda: restore_from_repository(catalog, stored, out),
        "copy": lambda: copy_fsync(full, out),
        "copy + sha256": lambda: copy_fsync_sha256(full, out),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            settle(full, out)
            warm(*packs)
            times[name].append(timed(variants[name])[0])
    remove(out, full)
    sync()
    return {"seconds": {name: spread(values) for name, values in times.items()},
            "ratio_copy": ratios(times["repository"], times["copy"]),
            "ratio_copy_sha256": ratios(times["repository"], times["copy + sha256"]),
            "runs": times}


# -- peak memory ------------------------------------------------------------------------


def rss_child_main(db: str, directory: str) -> int:
    """The fresh child process: ru_maxrss growth across one store() into an empty
    repository. It forks once and measures in the fork, whose peak starts at its size."""
    if hasattr(os, "fork"):
        sys.stdout.flush()
        pid = os.fork()
        if pid:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 1
    try:
        repository = Repository.of(Path(directory))
        repository.prepare()
        gc.collect()
        before = maxrss_mib()
        stored = repository.store(Path(db))
        after = maxrss_mib()
        json.dump({"before_mib": before, "after_mib": after, "growth_mib": after - before,
                   "chunks": len(stored.chunks)}, sys.stdout)
        sys.stdout.flush()
        code = 0
    except Exception:
        traceback.print_exc()
    finally:
        if hasattr(os, "fork"):
            os._exit(code)
    return code


def measure_rss(db: Path, work: Path, script: Path) -> dict[str, Any]:
    if sys.platform == "win32":
        return {"skipped": "ru_maxrss is not available on Windows"}
    directory = work / "rss-catalog"
    settle(db)
    try:
        out = subprocess.run([sys.executable, str(script), "--rss-child", str(db),
                              str(directory)], check=True, capture_output=True,
                             text=True).stdout
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return dict(json.loads(out))


# -- the writer -------------------------------------------------------------------------


def writer_main(db: str) -> int:
    """The writer process: one small commit every 5 ms until stdin closes."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    conn = sqlite3.connect(db, timeout=30.0)
    records: list[tuple[float, float, int]] = []
    errors: list[str] = []
    next_at = time.monotonic()
    i = 0
    while not stop.is_set():
        i += 1
        start = time.monotonic()
        status = 1
        try:
            conn.execute(WRITER_INSERT, (f"w{os.getpid()}-{i}",))
            conn.commit()
        except sqlite3.OperationalError as exc:
            status = 0 if "database is locked" in str(exc) else -1
            if status < 0 and len(errors) < 10:
                errors.append(str(exc))
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        records.append((start, (time.monotonic() - start) * 1000.0, status))
        next_at += WRITER_PERIOD_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()
    json.dump({"records": records, "errors": errors}, sys.stdout)
    return 0


def measure_writer(db: Path, work: Path, script: Path, repeat: int) -> dict[str, Any]:
    """The writer's commit latency while full backups (backup-API copy) run."""
    snap, catalog = work / "writer-snapshot.sqlite", work / "writer-catalog"
    settle(db)
    proc = subprocess.Popen([sys.executable, str(script), "--writer", str(db)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    windows: list[tuple[float, float]] = []
    try:
        time.sleep(WRITER_BEFORE_S)
        for _ in range(repeat):
            shutil.rmtree(catalog, ignore_errors=True)
            start = time.monotonic()
            copy_backup_api(db, snap)
            quick_check(snap)
            Repository.of(catalog).store(snap)
            windows.append((start, time.monotonic()))
            remove(snap)
            time.sleep(WRITER_AFTER_S)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(catalog, ignore_errors=True)
        remove(snap)
    return writer_figures(json.loads(out), windows)


def writer_figures(data: dict[str, Any], windows: list[tuple[float, float]]) -> dict[str, Any]:
    during = [(lat, status) for start, lat, status in data["records"]
              if any(start < end and start + lat / 1000.0 > begin for begin, end in windows)]
    before = [lat for start, lat, status in data["records"]
              if start < windows[0][0] and status == 1]
    latencies = [lat for lat, status in during if status == 1]
    return {
        "commits": len(latencies), "backups": len(windows),
        "backup_s": spread([end - begin for begin, end in windows]),
        "locked_errors": sum(1 for _, status in during if status == 0),
        "other_errors": data["errors"],
        "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=math.nan),
        "baseline_p99_ms": percentile(before, 0.99),
        "baseline_max_ms": max(before, default=math.nan),
    }


# -- one size ---------------------------------------------------------------------------


def run_size(size: int, work: Path, repeat: int, days: int, script: Path) -> dict[str, Any]:
    db = work / "tradesv3.sqlite"
    catalog = work / "catalog"
    try:
        database, book = build_database(db, size)
        full, base = measure_full(db, work, catalog, repeat)
        chunk_size = Repository.of(catalog).chunk_size
        kept = [base]
        touched = trading_day(db, book)
        day, stored = measure_day(db, work, catalog, kept, repeat)
        day["rows_touched"] = touched
        kept.append(stored)
        scattered = measure_scattered(db, work, catalog, kept, touched)
        series = run_days(db, catalog, kept, book, days - 1)
        restore = measure_restore(db, work, catalog, kept[-1], repeat)
        rss = measure_rss(db, work, script)
        writer = measure_writer(db, work, script, repeat)
    finally:
        remove(db)
        shutil.rmtree(catalog, ignore_errors=True)
    return {"size": size, "label": size_label(size), "database": database,
            "chunk_size": chunk_size, "full": full,
            "day": day, "scattered": scattered, "days": series, "restore": restore,
            "rss": rss, "writer": writer}


# -- the report -------------------------------------------------------------------------

#: (figure, value, baseline, ratio, target, passed or None when there is no target)
Row = tuple[str, str, str, str, str, bool | None]


def secs(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} s ({s['min']:.3f}-{s['max']:.3f})"


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def rows_backups(r: dict[str, Any]) -> list[Row]:
    full, day, sc = r["full"], r["day"], r["scattered"]
    floor = f"floor {full['floor']['floor']['median']:.3f} s"
    cp = f"cp+fsync {day['cp_fsync']['median']:.3f} s"
    fr, dr = full["ratio_floor"]["median"], day["store_ratio_cp"]["median"]
    cr, share = day["copy_store_ratio_cp"]["median"], day["added_share"]
    return [
        ("floor: cp + fsync + sha256", secs(full["floor"]["cp + fsync + sha256"]), "", "",
         "", None),
        ("floor: quick_check of the copy", secs(full["floor"]["quick_check"]), "", "", "",
         None),
        ("floor: the larger of the two", secs(full["floor"]["floor"]), "", "", "", None),
        ("full backup: copy + quick_check + store()", secs(full["backup"]["total"]), floor,
         f"{fr:.2f}x", f"<= {TARGET_FULL_OVER_FLOOR}x", fr <= TARGET_FULL_OVER_FLOOR),
        ("  copy to a temporary file", secs(full["backup"]["copy"]), "", "", "", None),
        ("  quick_check", secs(full["backup"]["quick_check"]), "", "", "", None),
        ("  store() alone", secs(full["backup"]["store"]), floor,
         f"{full['store_ratio_floor']['median']:.2f}x", "", None),
        ("day: bytes written (Stored.added)", mib(day["added"]), f"db {mib(day['bytes'])}",
         f"{share:.2%}", f"<= {TARGET_DAY_ADDED_SHARE:.0%}", share <= TARGET_DAY_ADDED_SHARE),
        ("day: store() alone", secs(day["backup"]["store"]), cp, f"{dr:.2f}x",
         f"<= {TARGET_DAY_OVER_CP}x", dr <= TARGET_DAY_OVER_CP),
        ("day: copy + store() (no quick_check)", secs(day["copy_store_s"]), cp, f"{cr:.2f}x",
         f"<= {TARGET_DAY_OVER_CP}x", cr <= TARGET_DAY_OVER_CP),
        ("day: copy + quick_check + store()", secs(day["backup"]["total"]), cp,
         f"{day['total_ratio_cp']['median']:.2f}x", "", None),
        (f"worst case: {sc['rows']:,} rows at random", mib(sc["added"]),
         f"db {mib(sc['bytes'])}", f"{sc['added_share']:.2%}", "", None),
        ("worst case: store() alone", f"{sc['store_s']:.3f} s", cp,
         f"{sc['store_s'] / day['cp_fsync']['median']:.2f}x", "", None),
    ]


def rows_rest(r: dict[str, Any], largest: bool) -> list[Row]:
    d, rs, w = r["days"], r["restore"], r["writer"]
    ratio, rr = d["ratio_db"], rs["ratio_copy"]["median"]
    copy = f"copy+fsync {rs['seconds']['copy']['median']:.3f} s"
    rows: list[Row] = [
        (f"{d['backups']} backups: repository + manifests",
         mib(d["repository"] + d["manifests"]), f"db {mib(d['bytes'])}", f"{ratio:.2f}x",
         f"<= {TARGET_REPOSITORY_OVER_DB}x", ratio <= TARGET_REPOSITORY_OVER_DB),
        ("  repository: packs, indexes, config", mib(d["repository"]), "", "", "", None),
        (f"  {d['backups']} manifests, estimated", mib(d["manifests"]),
         f"{MANIFEST_PER_CHUNK} B/chunk + {MANIFEST_BASE // 1024} KiB", "", "", None),
        (f"  the same {d['backups']} as full copies", mib(d["full_copies"]),
         f"db {mib(d['bytes'])}", f"{d['full_copies'] / d['bytes']:.2f}x", "", None),
        ("  a day's bytes written, median (max)",
         f"{d['day_added_share']['median']:.2%} ({d['day_added_share']['max']:.2%})",
         "of the db", "", "", None),
        ("restore: read_into + fsync", secs(rs["seconds"]["repository"]), copy,
         f"{rr:.2f}x", f"<= {TARGET_RESTORE_OVER_COPY}x", rr <= TARGET_RESTORE_OVER_COPY),
        ("restore: copy + fsync + sha256", secs(rs["seconds"]["copy + sha256"]), "",
         f"{rs['ratio_copy_sha256']['median']:.2f}x", "", None),
    ]
    if "growth_mib" in r["rss"]:
        growth = r["rss"]["growth_mib"]
        rows.append(("peak RSS growth during store() (full)", f"{growth:.1f} MiB",
                     f"before {r['rss']['before_mib']:.1f} MiB", "",
                     f"<= {TARGET_RSS_MIB:.0f} MiB" if largest else "",
                     growth <= TARGET_RSS_MIB if largest else None))
    ok = w["p99_ms"] <= TARGET_WRITER_P99_MS and w["max_ms"] <= TARGET_WRITER_MAX_MS \
        and w["locked_errors"] == 0
    rows.append(("writer commits during a full backup, p99 / max",
                 f"{w['p99_ms']:.1f} / {w['max_ms']:.1f} ms",
                 f"before {w['baseline_p99_ms']:.1f} / {w['baseline_max_ms']:.1f} ms",
                 f"{w['locked_errors']} locked",
                 f"<= {TARGET_WRITER_P99_MS:.0f} / {TARGET_WRITER_MAX_MS:.0f} ms", ok))
    return rows


def print_size(r: dict[str, Any], rows: list[Row]) -> None:
    db = r["database"]
    print(f"\n{r['label']}: database {mib(db['bytes'])} ({db['page_size']}-byte pages, "
          f"{r['chunk_size']}-byte chunks), "
          f"{db['trades']:,} trades and {db['orders']:,} orders, built in {db['build_s']} s; "
          f"a day appends {db['day_trades']:,} trades and {3 * db['day_trades']:,} orders "
          f"and touches {r['day']['rows_touched']:,} rows")
    print(f"{'figure':<47} {'median (lowest-highest)':<25} {'baseline':<25} "
          f"{'ratio':>9}  {'target':<16} verdict")
    for figure, value, baseline, ratio, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"{figure:<47} {value:<25} {baseline:<25} {ratio:>9}  {target:<16} {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100M",
                        help="database sizes, comma separated (default 100M)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="repeats of every timed comparison (default 3)")
    parser.add_argument("--days", type=int, default=DAYS, metavar="D",
                        help=f"trading days backed up after the full backup (default {DAYS})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--dir", type=Path, default=None, metavar="PATH",
                        help="where to build the databases (default: a temporary directory)")
    parser.add_argument("--writer", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", nargs=2, metavar=("DB", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        return writer_main(args.writer)
    if args.rss_child:
        return rss_child_main(*args.rss_child)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected sizes like 100M,1G")
    if not sizes or min(sizes) < MIB or args.repeat < 1 or args.days < 1:
        parser.error("--sizes must be at least 1M each, --repeat and --days at least 1")
    module = Path(inspect.getfile(Repository))
    digest = sha256_of(module)
    results, skipped = run_all(sizes, args, Path(__file__).resolve())
    report(results, skipped, args, digest)
    if sha256_of(module) != digest:
        print(f"warning: {module} changed during the run; the figures may mix two versions",
              file=sys.stderr)
    return 0


def run_all(sizes: list[int], args: argparse.Namespace,
            script: Path) -> tuple[list[dict[str, Any]], list[str]]:
    parent = args.dir.expanduser().resolve() if args.dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dbguard-bench-repository-", dir=parent))
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for size in sizes:
            need = 8 * size + 256 * MIB
            free = shutil.disk_usage(work).free
            if free < need:
                skipped.append(f"{size_label(size)}: needs {need / MIB:,.0f} MiB free in "
                               f"{work}, {free / MIB:,.0f} MiB free")
                continue
            if not args.json:
                print(f"building and measuring {size_label(size)} in {work} ...",
                      file=sys.stderr, flush=True)
            results.append(run_size(size, work, args.repeat, args.days, script))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results, skipped


def report(results: list[dict[str, Any]], skipped: list[str], args: argparse.Namespace,
           module_sha256: str) -> None:
    largest = max((r["size"] for r in results), default=0)
    tables = {r["label"]: rows_backups(r) + rows_rest(r, r["size"] == largest)
              for r in results}
    verdicts = [(ok, f"{label}: {figure}: {value}{', ' + ratio if ratio else ''} "
                     f"(target {target})")
                for label, rows in tables.items()
                for figure, value, _, ratio, target, ok in rows if ok is not None]
    m = machine()
    if args.json:
        print(json.dumps(no_nan({
            "machine": m, "repository_module_sha256": module_sha256,
            "repeat": args.repeat, "days": args.days, "results": results,
            "skipped": skipped,
            "verdicts": [{"pass": ok, "target": text} for ok, text in verdicts],
        }), indent=2))
        return
    print(f"dbguard {m['dbguard']} repository benchmark: {m['implementation']} {m['python']}, "
          f"SQLite {m['sqlite']}, {m['cpus']} CPUs, {args.repeat} repeats, {args.days} days, "
          f"repository.py sha256 {module_sha256[:12]}")
    for r in results:
        print_size(r, tables[r["label"]])
    for text in skipped:
        print(f"skipped {text}")
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'MISS'}: {text}")


if __name__ == "__main__":
    sys.exit(main())
