"""What dbguard's deduplicated repository costs and saves, through dbguard's real backup
and restore: a full backup, a trading day's backup, 30 days of them, a restore, memory,
and a live writer.

    python bench/repository.py [--sizes 100M,1G] [--repeat N] [--days D] [--json] [--dir PATH]

For each size (default ``100M``; ``K``, ``M``, ``G`` are binary units) the script builds
a SQLite database shaped like a trading bot's: ``trades`` and ``orders`` with
freqtrade's columns that matter here, a text column of random hex standing in for the
rest (trades about 330 bytes a row, orders about 250), three orders per trade, and
freqtrade's indexes (trades by pair and by is_open, orders by trade, by status, by pair
and open flag, and unique by pair and order id). Rows go in in batches, trades and
their orders interleaved, until the file reaches the size; then WAL mode and
``PRAGMA wal_checkpoint(TRUNCATE)``.

Backups are dbguard's own: ``Guard(Config(db_url=..., storage="repository",
keep_last=1000, keep_daily=0, keep_weekly=0, ...)).backup("manual")``, timed by wall
clock. That is the snapshot copy (a child process) to a temporary file, then
``quick_check`` of the copy with ``Repository.store()`` of it on a thread beside it, the
manifest, and the prune after it (which keeps everything but still collects the
repository). The repository is ``<db>.dbguard/backups/repository``. The copy,
``quick_check`` and ``store()`` inside it are timed too, by wrapping the functions the
backup calls. The same database is also backed up by a second Guard with
``storage="files"`` and a state directory of its own (the full verified copy dbguard
makes without the repository). Then, in one process:

1. **Floor**, the least a verified full copy costs: ``shutil.copyfile`` + fsync of the
   copy + sha256 of the copy, and separately ``PRAGMA quick_check`` of that copy; the
   floor is the larger of the two (they could run side by side).
2. **Full backup into an empty repository** (the catalog removed before each), the
   floor and the files backup, interleaved over N repeats (default 3), the order
   rotating; every run starts with ``sync`` and the database read once, both untimed.
   Ratios: against the floor, or the files backup, of the same repeat.
3. **A trading day**, as a bot makes it: the orders of the trades still open are filled
   and those trades closed, then 1 % of the database's rows are appended (a quarter
   trades, three orders each; a tenth of the new trades stay open with open orders).
   Then the repository backup again, ``cp`` + fsync of the database and the files
   backup, interleaved over N repeats; every repository backup but the last is undone
   (its manifest deleted, then ``Guard.prune()``, which collects its chunks). Figures:
   the bytes the backup added (``Manifest.added``) / the database's size; the backup's
   wall time (quick_check inside it) / cp + fsync; the copy + ``store()`` inside it
   (the backup without quick_check, roughly) / cp + fsync. The worst case, without a
   target: as many rows as the day touched, updated at random across both tables
   (non-indexed columns), on a copy of the database, stored with ``store()`` and
   collected again.
4. **30 days**: 29 more such days, each backed up with ``guard.backup()``. The
   repository's size (``stored_bytes()``) plus the size of the catalog's manifest files
   (``<db>.dbguard/backups/*.json``) / the size of the database at the end, beside what
   the same backups take as full copies.
5. **Restore** of the last backup, as ``dbguard restore ID --yes --force`` runs it after
   its preview: ``dbguard_plugin.operations.restore.restore(guard, id, force=True)`` (the
   lease, the verification with integrity_check, the preview, a safety backup, the
   journal, the write into the live database, post_check), against the same restore of
   a files backup of the same content taken through the files Guard; and, for
   reference, ``read_into`` a new file + fsync against ``copyfile`` + fsync of the files
   backup. Interleaved over N repeats, the packs and the files backup warm; the safety
   backups are deleted after each run, untimed.
6. **Peak memory**: ``ru_maxrss`` growth across one full ``guard.backup()`` into an
   empty repository, in a fresh child process that forks once and measures in the fork
   (on Linux ``ru_maxrss`` survives exec, so a child started by this larger process
   would start with its peak). The snapshot copy's own child process is not counted.
7. **A live writer**: a separate process commits one small row into ``orders`` every
   5 ms (Python's ``sqlite3`` defaults, busy timeout 30 s) while ``guard.backup()``
   runs N times, each into a new empty repository. p99 and max of the commits that
   overlapped a backup, beside those of the second before the first.

The 1-minute load average is sampled every 2 s during each size and printed.

The 1 GiB size needs about 8 GiB free in --dir (default: a new temporary directory,
removed afterwards; with --dir a new subdirectory of PATH, removed afterwards).

A benchmark is not a test: the target lines say PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from collections.abc import Callable, Iterator
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

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Repository
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.engines.sqlite import backup as sqlite_backup
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config

#: The issue's targets (#15).
TARGET_FULL_OVER_FLOOR = 1.15
TARGET_DAY_ADDED_SHARE = 0.03
TARGET_DAY_OVER_CP = 0.5
TARGET_REPOSITORY_OVER_DB = 1.5
TARGET_RESTORE_OVER_FILES = 1.2
TARGET_RSS_MIB = 64.0
TARGET_WRITER_P99_MS = 20.0
TARGET_WRITER_MAX_MS = 100.0

DAYS = 30
#: A day appends this share of the database's rows (of the first day, every day: a bot
#: trades at a steady rate while its database grows).
DAY_SHARE = 0.01
#: The share of a day's new trades still open at its end (closed the next day).
OPEN_SHARE = 0.1

WRITER_PERIOD_S = 0.005
WRITER_BEFORE_S = 1.0
WRITER_AFTER_S = 0.5
LOAD_EVERY_S = 2.0

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



# -- dbguard ----------------------------------------------------------------------------

#: The seconds each of the backup's own steps took in the last backup, set by the
#: wrappers install_step_timers() puts around them (store() runs beside quick_check).
STEP_SECONDS: dict[str, float] = {}


def guard_for(db: Path, storage: str, state_dir: Path | None = None) -> Guard:
    """A Guard as a bot's config makes it; every backup kept, but the prune after each
    still runs (and collects the repository), as it does for a bot."""
    return Guard(Config(db_url=f"sqlite:///{db}", storage=storage, keep_last=1000,
                        keep_daily=0, keep_weekly=0, backup_on_session_start=False,
                        backup_on_session_end=False,
                        state_dir=None if state_dir is None else str(state_dir)))


def _step_timer(label: str, func: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(func)
    def timed_step(*args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            STEP_SECONDS[label] = time.perf_counter() - start
    return timed_step


def install_step_timers() -> None:
    """Split the real backup by step without changing what it runs: the engine calls
    these by their module or class attribute, so wrapping the attribute is enough."""
    for label, owner, name in (("copy", sqlite_backup, "_copy_snapshot"),
                               ("quick_check", sqlite_backup, "_check_copy"),
                               ("store", Repository, "store")):
        setattr(owner, name, _step_timer(label, getattr(owner, name)))


def timed_backup(guard: Guard) -> tuple[dict[str, float], Manifest]:
    """``guard.backup("manual")`` by wall clock, with its steps."""
    STEP_SECONDS.clear()
    start = time.perf_counter()
    manifest = guard.backup("manual")
    seconds = {"total": time.perf_counter() - start, **STEP_SECONDS}
    if "store" in seconds:
        seconds["copy + store"] = seconds["copy"] + seconds["store"]
    return seconds, manifest


def empty_repository(db: Path, guard: Guard | None) -> Guard:
    """The repository Guard over an empty catalog (reopened: a Catalog prepares its
    directory once)."""
    if guard is not None:
        guard.close()
        shutil.rmtree(guard.catalog.directory)
    return guard_for(db, "repository")


def undo(guard: Guard, manifest: Manifest) -> None:
    """Drop a measured backup that is not kept: its manifest, then the chunks no other
    manifest references, as prune would."""
    guard.catalog.delete(manifest)
    guard.prune()


def drop_safety_backups(guard: Guard) -> None:
    for manifest in guard.catalog.manifests():
        if manifest.reason == "pre-restore":
            guard.catalog.delete(manifest)
    guard.prune()


def manifest_files(guard: Guard) -> list[Path]:
    return [p for p in guard.catalog.directory.glob("*.json") if not p.name.startswith(".")]


# -- backups ----------------------------------------------------------------------------


def floor_run(db: Path, out: Path) -> dict[str, float]:
    copy_s, _ = timed(lambda: copy_fsync_sha256(db, out))
    check_s, _ = timed(lambda: quick_check(out))
    remove(out)
    return {"cp + fsync + sha256": copy_s, "quick_check": check_s,
            "floor": max(copy_s, check_s)}


def steps(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {key: spread([run[key] for run in runs]) for key in runs[0]}


def rotated(names: list[str], r: int) -> list[str]:
    """The order of repeat *r*: each variant goes first, second and last in turn."""
    return names[r % len(names):] + names[:r % len(names)]


def measure_full(db: Path, work: Path, files: Guard,
                 repeat: int) -> tuple[dict[str, Any], Guard, Manifest]:
    """Floor, repository backup into an empty repository and files backup, interleaved;
    the last repository backup, and its Guard, kept."""
    out = work / "copy.sqlite"
    runs: dict[str, list[dict[str, float]]] = {"floor": [], "repository": [], "files": []}
    guard: Guard | None = None
    kept: Manifest | None = None
    for r in range(repeat):
        for name in rotated(list(runs), r):
            if name == "repository":
                guard = empty_repository(db, guard)
            settle(db, out)
            if name == "floor":
                runs[name].append(floor_run(db, out))
            elif name == "repository":
                assert guard is not None
                seconds, kept = timed_backup(guard)
                runs[name].append(seconds)
            else:
                seconds, made = timed_backup(files)
                runs[name].append(seconds)
                files.catalog.delete(made)  # only its time matters; the disk is finite
    assert guard is not None
    assert kept is not None
    sync()
    floor = [run["floor"] for run in runs["floor"]]
    repository = [run["total"] for run in runs["repository"]]
    return {
        "floor": steps(runs["floor"]), "repository": steps(runs["repository"]),
        "files": steps(runs["files"]),
        "ratio_floor": ratios(repository, floor),
        "files_ratio_floor": ratios([run["total"] for run in runs["files"]], floor),
        "ratio_files": ratios(repository, [run["total"] for run in runs["files"]]),
        "added": kept.added, "chunks": kept.chunk_count, "runs": runs,
    }, guard, kept


def measure_day(db: Path, work: Path, guard: Guard, files: Guard,
                repeat: int) -> tuple[dict[str, Any], Manifest]:
    """The day's repository backup against cp + fsync and the files backup, interleaved;
    every repository backup but the last undone."""
    out = work / "copy.sqlite"
    runs: dict[str, list[dict[str, float]]] = {"cp": [], "repository": [], "files": []}
    kept: Manifest | None = None
    for r in range(repeat):
        for name in rotated(list(runs), r):
            if name == "repository" and kept is not None:
                undo(guard, kept)
            settle(db, out)
            if name == "cp":
                runs[name].append({"total": timed(lambda: copy_fsync(db, out))[0]})
                remove(out)
            elif name == "repository":
                seconds, kept = timed_backup(guard)
                runs[name].append(seconds)
            else:
                seconds, made = timed_backup(files)
                runs[name].append(seconds)
                files.catalog.delete(made)
    assert kept is not None
    sync()
    size = db.stat().st_size
    cps = [run["total"] for run in runs["cp"]]
    backups = runs["repository"]
    return {
        "bytes": size, "added": kept.added, "added_share": kept.added / size,
        "cp_fsync": spread(cps), "repository": steps(backups), "files": steps(runs["files"]),
        "ratio_cp": ratios([run["total"] for run in backups], cps),
        "copy_store_ratio_cp": ratios([run["copy + store"] for run in backups], cps),
        "files_ratio_cp": ratios([run["total"] for run in runs["files"]], cps),
        "runs": runs,
    }, kept


def measure_scattered(db: Path, work: Path, guard: Guard, rows: int) -> dict[str, Any]:
    """The worst case: as many rows as the day touched, at random, on a copy; stored
    with store() (a copy is no database dbguard guards), then collected."""
    copy = work / "scattered.sqlite"
    shutil.copyfile(db, copy)
    scattered_updates(copy, rows, random.Random(15))
    settle(copy)
    repository = Repository.of(guard.catalog.directory)
    with guard.catalog.locked():  # store() expects the catalog lock a backup holds
        seconds, stored = timed(lambda: repository.store(copy))
    guard.prune()  # no manifest names it: all it added is collected
    size = copy.stat().st_size
    remove(copy)
    sync()
    return {"rows": rows, "store_s": seconds, "added": stored.added,
            "added_share": stored.added / size, "bytes": size}


def run_days(db: Path, guard: Guard, kept: list[Manifest], book: Book,
             days: int) -> dict[str, Any]:
    """More days, each backed up by the Guard; then what the catalog holds."""
    seconds: list[float] = []
    for _ in range(days):
        trading_day(db, book)
        settle(db)
        elapsed, manifest = timed_backup(guard)
        seconds.append(elapsed["total"])
        kept.append(manifest)
    repository = Repository.of(guard.catalog.directory).stored_bytes()
    files = manifest_files(guard)
    manifests = sum(p.stat().st_size for p in files)
    size = db.stat().st_size
    return {
        "backups": len(kept), "manifest_files": len(files), "bytes": size,
        "first_bytes": kept[0].raw_size, "repository": repository, "manifests": manifests,
        "ratio_db": (repository + manifests) / size,
        "full_copies": sum(m.raw_size for m in kept),
        "day_added_share": spread([m.added / m.raw_size for m in kept[1:]]),
        "day_backup_s": spread(seconds),
    }


# -- restore ----------------------------------------------------------------------------


def read_into_fsync(catalog: Path, manifest: Manifest, out: Path) -> None:
    repository = Repository.of(catalog)
    with repository.reading(), open(out, "wb") as fh:
        size = repository.read_into(manifest.chunk_list, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if size != manifest.raw_size:
        raise RuntimeError("the restored file differs from the backup")


def measure_restore(db: Path, work: Path, guard: Guard, files: Guard, last: Manifest,
                    repeat: int) -> dict[str, Any]:
    """The last backup restored into the live database by dbguard's restore, against
    the same restore of a files backup of the same content (the database is idle)."""
    _, copy = timed_backup(files)
    full, out = files.catalog.data_path(copy), work / "restored.sqlite"
    packs = sorted(Repository.of(guard.catalog.directory).packs_dir.rglob("*.pack"))
    variants: dict[str, Callable[[], object]] = {
        "repository": lambda: restore(guard, last.id, force=True, who="bench"),
        "files": lambda: restore(files, copy.id, force=True, who="bench"),
        "read_into": lambda: read_into_fsync(guard.catalog.directory, last, out),
        "copy": lambda: copy_fsync(full, out),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeat):
        for name in rotated(list(variants), r):
            settle(db, out)
            warm(full, *packs)
            times[name].append(timed(variants[name])[0])
            for one in (guard, files):
                drop_safety_backups(one)
    remove(out)
    files.catalog.delete(copy)
    sync()
    return {"seconds": {name: spread(values) for name, values in times.items()},
            "ratio_files": ratios(times["repository"], times["files"]),
            "ratio_copy": ratios(times["read_into"], times["copy"]), "runs": times}


# -- peak memory ------------------------------------------------------------------------


def rss_child_main(db: str, state_dir: str) -> int:
    """The fresh child process: ru_maxrss growth across one full guard.backup() into an
    empty repository. It forks once and measures in the fork, whose peak starts at its
    size. The snapshot copy's own child process is not counted: its ru_maxrss starts
    at the fork's size (inherited across the spawn), so it would say nothing."""
    if hasattr(os, "fork"):
        sys.stdout.flush()
        pid = os.fork()
        if pid:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 1
    try:
        guard = guard_for(Path(db), "repository", Path(state_dir))
        gc.collect()
        before = maxrss_mib()
        manifest = guard.backup("manual")
        after = maxrss_mib()
        guard.close()
        json.dump({"before_mib": before, "after_mib": after, "growth_mib": after - before,
                   "chunks": manifest.chunk_count}, sys.stdout)
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
    state_dir = work / "rss-state"
    settle(db)
    try:
        out = subprocess.run([sys.executable, str(script), "--rss-child", str(db),
                              str(state_dir)], check=True, capture_output=True,
                             text=True).stdout
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return dict(json.loads(out))

# -- the writer -------------------------------------------------------------------------


def writer_main(db: str) -> int:
    """The writer process: one small commit every 5 ms until stdin closes."""
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
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
    """The writer's commit latency while guard.backup() runs, each time into a new empty
    repository (a state directory of its own: the main catalog stays as it is)."""
    state_dir = work / "writer-state"
    settle(db)
    proc = subprocess.Popen([sys.executable, str(script), "--writer", str(db)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    windows: list[tuple[float, float]] = []
    try:
        time.sleep(WRITER_BEFORE_S)
        for _ in range(repeat):
            guard = guard_for(db, "repository", state_dir)
            try:
                start = time.monotonic()
                guard.backup("manual")
                windows.append((start, time.monotonic()))
            finally:
                guard.close()
                shutil.rmtree(state_dir, ignore_errors=True)
            time.sleep(WRITER_AFTER_S)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(state_dir, ignore_errors=True)
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


@contextlib.contextmanager
def load_sampled() -> Iterator[list[float]]:
    """The 1-minute load average, every LOAD_EVERY_S while the block runs: the machine
    is shared, and the figures mean little without it."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            with contextlib.suppress(OSError):
                samples.append(os.getloadavg()[0])
            if stop.wait(LOAD_EVERY_S):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def run_size(size: int, work: Path, repeat: int, days: int, script: Path) -> dict[str, Any]:
    db = work / "tradesv3.sqlite"
    files_state = work / "files-state"
    guard: Guard | None = None
    files: Guard | None = None
    started = time.monotonic()
    try:
        with load_sampled() as load:
            database, book = build_database(db, size)
            files = guard_for(db, "files", files_state)
            full, guard, base = measure_full(db, work, files, repeat)
            chunk_size = Repository.of(guard.catalog.directory).chunk_size
            kept = [base]
            touched = trading_day(db, book)
            day, stored = measure_day(db, work, guard, files, repeat)
            day["rows_touched"] = touched
            kept.append(stored)
            scattered = measure_scattered(db, work, guard, touched)
            series = run_days(db, guard, kept, book, days - 1)
            restored = measure_restore(db, work, guard, files, kept[-1], repeat)
            rss = measure_rss(db, work, script)
            writer = measure_writer(db, work, script, repeat)
    finally:
        for one in (guard, files):
            if one is not None:
                one.close()
        remove(db)
        for leftover in (Path(f"{db}.dbguard"), files_state):
            shutil.rmtree(leftover, ignore_errors=True)
    return {"size": size, "label": size_label(size), "database": database,
            "chunk_size": chunk_size, "full": full, "day": day, "scattered": scattered,
            "days": series, "restore": restored, "rss": rss, "writer": writer,
            "load": spread(load), "seconds": round(time.monotonic() - started, 1)}


# -- the report -------------------------------------------------------------------------

#: (figure, value, baseline, ratio, target, passed or None when there is no target)
Row = tuple[str, str, str, str, str, bool | None]


def secs(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} s ({s['min']:.3f}-{s['max']:.3f})"


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def rows_full(r: dict[str, Any]) -> list[Row]:
    full = r["full"]
    rep, floor_s = full["repository"], full["floor"]
    floor = f"floor {floor_s['floor']['median']:.3f} s"
    ratio = full["ratio_floor"]["median"]
    return [
        ("floor: cp + fsync + sha256", secs(floor_s["cp + fsync + sha256"]), "", "", "",
         None),
        ("floor: quick_check of the copy", secs(floor_s["quick_check"]), "", "", "", None),
        ("floor: the larger of the two", secs(floor_s["floor"]), "", "", "", None),
        ("full: guard.backup(), repository", secs(rep["total"]), floor, f"{ratio:.2f}x",
         f"<= {TARGET_FULL_OVER_FLOOR}x", ratio <= TARGET_FULL_OVER_FLOOR),
        ("  snapshot copy (child process)", secs(rep["copy"]), "", "", "", None),
        ("  quick_check", secs(rep["quick_check"]), "", "", "", None),
        ("  store(), beside quick_check", secs(rep["store"]), "", "", "", None),
        ("full: guard.backup(), files", secs(full["files"]["total"]), floor,
         f"{full['files_ratio_floor']['median']:.2f}x", "", None),
        ("full: repository / files", "", "", f"{full['ratio_files']['median']:.2f}x", "",
         None),
    ]


def rows_day(r: dict[str, Any]) -> list[Row]:
    day, sc = r["day"], r["scattered"]
    rep, share = day["repository"], day["added_share"]
    cp = f"cp+fsync {day['cp_fsync']['median']:.3f} s"
    ratio, cs = day["ratio_cp"]["median"], day["copy_store_ratio_cp"]["median"]
    return [
        ("day: bytes added (Manifest.added)", mib(day["added"]), f"db {mib(day['bytes'])}",
         f"{share:.2%}", f"<= {TARGET_DAY_ADDED_SHARE:.0%}", share <= TARGET_DAY_ADDED_SHARE),
        ("day: guard.backup(), repository (qc inside)", secs(rep["total"]), cp,
         f"{ratio:.2f}x", f"<= {TARGET_DAY_OVER_CP}x", ratio <= TARGET_DAY_OVER_CP),
        ("  snapshot copy + store() (no quick_check)", secs(rep["copy + store"]), cp,
         f"{cs:.2f}x", "", None),
        ("  quick_check", secs(rep["quick_check"]), "", "", "", None),
        ("  store(), beside quick_check", secs(rep["store"]), "", "", "", None),
        ("day: guard.backup(), files", secs(day["files"]["total"]), cp,
         f"{day['files_ratio_cp']['median']:.2f}x", "", None),
        (f"worst case: {sc['rows']:,} rows at random", mib(sc["added"]),
         f"db {mib(sc['bytes'])}", f"{sc['added_share']:.2%}", "", None),
        ("worst case: store() alone", f"{sc['store_s']:.3f} s", cp,
         f"{sc['store_s'] / day['cp_fsync']['median']:.2f}x", "", None),
    ]


def rows_days(r: dict[str, Any]) -> list[Row]:
    d = r["days"]
    ratio, n = d["ratio_db"], d["backups"]
    each = d["manifests"] / max(1, d["manifest_files"]) / 1024
    return [
        (f"{n} backups: repository + manifests", mib(d["repository"] + d["manifests"]),
         f"db {mib(d['bytes'])}", f"{ratio:.2f}x", f"<= {TARGET_REPOSITORY_OVER_DB}x",
         ratio <= TARGET_REPOSITORY_OVER_DB),
        ("  repository: packs, indexes, config", mib(d["repository"]), "", "", "", None),
        (f"  {d['manifest_files']} manifest files", mib(d["manifests"]),
         f"{each:.1f} KiB each", "", "", None),
        (f"  the same {n} as full copies", mib(d["full_copies"]), f"db {mib(d['bytes'])}",
         f"{d['full_copies'] / d['bytes']:.2f}x", "", None),
        ("  a day's bytes added, median (max)",
         f"{d['day_added_share']['median']:.2%} ({d['day_added_share']['max']:.2%})",
         "of the db", "", "", None),
        ("  a day's guard.backup()", secs(d["day_backup_s"]), "", "", "", None),
    ]


def rows_rest(r: dict[str, Any], largest: bool) -> list[Row]:
    rs, w = r["restore"], r["writer"]
    seconds, rr = rs["seconds"], rs["ratio_files"]["median"]
    rows: list[Row] = [
        ("restore(): repository backup", secs(seconds["repository"]),
         f"files {seconds['files']['median']:.3f} s", f"{rr:.2f}x",
         f"<= {TARGET_RESTORE_OVER_FILES}x", rr <= TARGET_RESTORE_OVER_FILES),
        ("restore(): files backup", secs(seconds["files"]), "", "", "", None),
        ("read_into + fsync", secs(seconds["read_into"]),
         f"copy+fsync {seconds['copy']['median']:.3f} s",
         f"{rs['ratio_copy']['median']:.2f}x", "", None),
    ]
    if "growth_mib" in r["rss"]:
        growth = r["rss"]["growth_mib"]
        rows.append(("peak RSS growth, full guard.backup()", f"{growth:.1f} MiB",
                     f"before {r['rss']['before_mib']:.1f} MiB", "",
                     f"<= {TARGET_RSS_MIB:.0f} MiB" if largest else "",
                     growth <= TARGET_RSS_MIB if largest else None))
    ok = w["p99_ms"] <= TARGET_WRITER_P99_MS and w["max_ms"] <= TARGET_WRITER_MAX_MS \
        and w["locked_errors"] == 0
    rows.append(("writer commits during guard.backup(), p99/max",
                 f"{w['p99_ms']:.1f} / {w['max_ms']:.1f} ms",
                 f"before {w['baseline_p99_ms']:.1f} / {w['baseline_max_ms']:.1f} ms",
                 f"{w['locked_errors']} locked",
                 f"<= {TARGET_WRITER_P99_MS:.0f} / {TARGET_WRITER_MAX_MS:.0f} ms", ok))
    return rows


def print_size(r: dict[str, Any], rows: list[Row]) -> None:
    db, load = r["database"], r["load"]
    print(f"\n{r['label']}: database {mib(db['bytes'])} ({db['page_size']}-byte pages, "
          f"{r['chunk_size']}-byte chunks), "
          f"{db['trades']:,} trades and {db['orders']:,} orders, built in {db['build_s']} s; "
          f"a day appends {db['day_trades']:,} trades and {3 * db['day_trades']:,} orders "
          f"and touches {r['day']['rows_touched']:,} rows; run {r['seconds']} s, "
          f"load average {load['median']:.2f} ({load['min']:.2f}-{load['max']:.2f})")
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
    modules = [Path(inspect.getfile(Repository)), Path(inspect.getfile(sqlite_backup))]
    digests = [sha256_of(module) for module in modules]
    install_step_timers()
    results, skipped = run_all(sizes, args, Path(__file__).resolve())
    report(results, skipped, args, digests[0])
    for module, digest in zip(modules, digests, strict=True):
        if sha256_of(module) != digest:
            print(f"warning: {module} changed during the run; the figures may mix two "
                  "versions", file=sys.stderr)
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
    tables = {r["label"]: rows_full(r) + rows_day(r) + rows_days(r)
              + rows_rest(r, r["size"] == largest)
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
