"""What a verified dbguard backup costs: against cp, against SQLite's own copies, to a
live writer, and in memory.

    python bench/backup.py [--sizes 100M,1G] [--repeat N] [--json] [--dir PATH]

For each size the script builds a SQLite database shaped like a trading bot's (trades
and orders with their indexes, plus bulk candle and order-book rows; random but partly
compressible values; WAL mode, checkpointed), then measures, in one process:

1. **Copies**, interleaved over N repeats (in a new, seeded random order in every
   repeat, so that no variant always follows the same one): ``cp`` of the database file
   (a subprocess; it leaves the copy in the page cache, unsynced), ``cp`` followed by an
   fsync of the copy, the same followed by a sha256 of the copy (the least any verified
   file copy costs), SQLite's backup API in one step (``src.backup(dst, pages=-1)``,
   destination with SQLite's defaults, which fdatasync it at commit), ``VACUUM INTO``
   (which fdatasyncs too) and dbguard's backup (``Guard(db_url=...).backup("manual")``:
   the whole verified path with the catalog lock, the copy, quick_check, the manifest
   facts and row counts, fsync, sha256, the rename, the manifest and pruning). The page
   cache is in the same state for every variant: the database file is read once,
   untimed, before each one, so every variant reads a warm source. After each variant
   its output is deleted and ``sync`` runs, untimed, so no variant pays for the
   previous one's dirty pages. Ratios are against ``cp`` of the same repeat. dbguard's
   time is also split by step (copy, quick_check, facts, row counts, fsync, sha256, the
   rest) by timing the backup module's own functions during the same runs.
2. **A live writer**: a separate process commits one small row into ``orders`` every
   5 ms (Python's sqlite3 defaults, busy_timeout 30 s) and records every commit's
   latency and its "database is locked" errors, while dbguard's backup runs, once with
   the database in WAL mode and once in rollback-journal (DELETE) mode.
3. **Peak memory**: dbguard's backup in a fresh child process; the growth is
   ``ru_maxrss`` after the backup minus ``ru_maxrss`` just before it (after the imports,
   the Guard and an open connection to the database). The child forks once and measures
   in the forked process: on Linux, ``ru_maxrss`` survives exec, so a child started by
   this (larger) process would otherwise start with this process's peak.

The 1 GiB size needs about 5 GiB free in --dir (default: a new temporary directory,
removed afterwards; with --dir a new subdirectory of PATH, removed afterwards).

A benchmark is not a test: the target lines say PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dbguard_plugin import Guard, __version__, sqlite_facts
from dbguard_plugin import backup as backup_module

MIB = 1 << 20
#: The issue's targets.
TARGET_RATIO_CP = 2.5
TARGET_WRITER_P99_MS = 20.0
TARGET_WRITER_MAX_MS = 100.0
TARGET_RSS_MIB = 50.0
#: The RSS target applies at this size (and above).
RSS_TARGET_SIZE = 1 << 30

WRITER_PERIOD_S = 0.005
WRITER_BUSY_TIMEOUT_S = 30.0
#: Writer commits recorded before the backup starts and after it ends.
WRITER_BEFORE_S = 1.0
WRITER_AFTER_S = 0.5

VARIANTS = (
    "cp", "cp + fsync", "cp + fsync + sha256", "backup API, one step", "VACUUM INTO",
    "dbguard backup",
)

#: dbguard's backup steps, timed by wrapping the functions ``create_backup`` calls.
#: (label, module, attribute); "facts" includes "row counts", which is subtracted.
STEPS: tuple[tuple[str, Any, str], ...] = (
    ("copy", backup_module, "_copy_snapshot"),
    ("quick_check", backup_module, "check"),
    ("facts", backup_module, "read_facts"),
    ("row counts", sqlite_facts, "row_counts"),
    ("fsync", backup_module, "_fsync_file"),
    ("sha256", backup_module, "file_digest"),
)

PAIRS = (
    "BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "BNB/USDT", "ADA/USDT", "DOGE/USDT",
    "AVAX/USDT", "DOT/USDT", "LINK/USDT", "MATIC/USDT", "LTC/USDT", "TRX/USDT",
    "ATOM/USDT", "NEAR/USDT", "UNI/USDT", "ETH/BTC", "SOL/BTC", "XRP/BTC", "BNB/BTC",
)

SCHEMA = """
CREATE TABLE pairs (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE trades (
    id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, pair TEXT NOT NULL,
    base_currency TEXT, stake_currency TEXT, is_open BOOLEAN NOT NULL,
    fee_open REAL NOT NULL, fee_close REAL NOT NULL, open_rate REAL NOT NULL,
    close_rate REAL, amount REAL NOT NULL, stake_amount REAL NOT NULL,
    open_date DATETIME NOT NULL, close_date DATETIME, strategy TEXT, enter_tag TEXT,
    exit_reason TEXT, leverage REAL NOT NULL, is_short BOOLEAN NOT NULL,
    close_profit REAL, realized_profit REAL);
CREATE INDEX ix_trades_pair ON trades (pair);
CREATE INDEX ix_trades_is_open ON trades (is_open);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, ft_trade_id INTEGER NOT NULL REFERENCES trades (id),
    ft_order_side TEXT NOT NULL, ft_pair TEXT NOT NULL, ft_is_open BOOLEAN NOT NULL,
    order_id TEXT NOT NULL, status TEXT, symbol TEXT, order_type TEXT, side TEXT,
    price REAL, average REAL, amount REAL, filled REAL, remaining REAL, cost REAL,
    order_date DATETIME, order_filled_date DATETIME, order_update_date DATETIME,
    ft_fee_base REAL);
CREATE INDEX ix_orders_ft_trade_id ON orders (ft_trade_id);
CREATE INDEX ix_orders_ft_is_open ON orders (ft_pair, ft_is_open);
CREATE UNIQUE INDEX uq_orders_pair_order_id ON orders (ft_pair, order_id);
CREATE TABLE candles (
    pair TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL);
CREATE UNIQUE INDEX uq_candles ON candles (pair, timeframe, ts);
CREATE TABLE order_book (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, pair TEXT NOT NULL,
    bids TEXT NOT NULL, asks TEXT NOT NULL);
CREATE INDEX ix_order_book_pair_ts ON order_book (pair, ts);
"""

# Rows are generated by SQLite itself (a recursive CTE and random()), which is much
# faster than building them in Python. ?1 is the first id, ?2 the row count.
_SERIES = "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1 + ?2 - 1)"
_PAIR = f"(SELECT name FROM pairs WHERE id = s.i % {len(PAIRS)})"
_LEVEL = "printf('[%.2f,%.4f]', 100 + (abs(random()) % 1000000) / 100.0, " \
         "(abs(random()) % 100000) / 10000.0)"
_SIDE = "'[' || " + " || ',' || ".join([_LEVEL] * 10) + " || ']'"

FILL_TRADES = f"""
INSERT INTO trades
{_SERIES}
SELECT i, 'binance', {_PAIR}, substr({_PAIR}, 1, instr({_PAIR}, '/') - 1), 'USDT',
    i % 50 = 0, 0.001, 0.001, (abs(random()) % 10000000) / 100.0,
    CASE WHEN i % 50 = 0 THEN NULL ELSE (abs(random()) % 10000000) / 100.0 END,
    (abs(random()) % 1000000) / 10000.0, 100.0 + (abs(random()) % 90000) / 100.0,
    datetime(1700000000 + i * 600, 'unixepoch'),
    CASE WHEN i % 50 = 0 THEN NULL ELSE datetime(1700000000 + i * 600 + 3600, 'unixepoch')
    END,
    'SampleStrategy', CASE i % 3 WHEN 0 THEN 'rsi_cross' WHEN 1 THEN 'ema_break' END,
    CASE WHEN i % 50 = 0 THEN NULL ELSE 'roi' END, 1.0, 0,
    (abs(random()) % 2000) / 10000.0 - 0.1, (abs(random()) % 20000) / 100.0 - 100
FROM s
"""

FILL_ORDERS = f"""
INSERT INTO orders
{_SERIES}
SELECT i, (i + 2) / 3, CASE i % 3 WHEN 1 THEN 'entry' WHEN 2 THEN 'exit' ELSE 'stoploss' END,
    (SELECT pair FROM trades WHERE id = (s.i + 2) / 3), 0,
    printf('%d-%04d', 1000000 + i, abs(random()) % 10000), 'closed',
    (SELECT pair FROM trades WHERE id = (s.i + 2) / 3),
    CASE i % 3 WHEN 0 THEN 'stop_loss_limit' ELSE 'limit' END,
    CASE i % 3 WHEN 1 THEN 'buy' ELSE 'sell' END,
    (abs(random()) % 10000000) / 100.0, (abs(random()) % 10000000) / 100.0,
    (abs(random()) % 1000000) / 10000.0, (abs(random()) % 1000000) / 10000.0, 0.0,
    (abs(random()) % 100000) / 100.0,
    datetime(1700000000 + i * 200, 'unixepoch'), datetime(1700000000 + i * 200 + 5, 'unixepoch'),
    datetime(1700000000 + i * 200 + 5, 'unixepoch'), NULL
FROM s
"""

FILL_CANDLES = f"""
INSERT INTO candles
{_SERIES}
SELECT {_PAIR}, '5m', 1600000000 + (i / {len(PAIRS)}) * 300,
    (abs(random()) % 10000000) / 100.0, (abs(random()) % 10000000) / 100.0,
    (abs(random()) % 10000000) / 100.0, (abs(random()) % 10000000) / 100.0,
    (abs(random()) % 100000000) / 1000.0
FROM s
"""

FILL_BOOK = f"""
INSERT INTO order_book
{_SERIES}
SELECT i, 1600000000 + i * 2, {_PAIR}, {_SIDE}, {_SIDE}
FROM s
"""

WRITER_INSERT = (
    "INSERT INTO orders (ft_trade_id, ft_order_side, ft_pair, ft_is_open, order_id, status, "
    "symbol, order_type, side, price, amount, filled, remaining, cost, order_date) "
    "VALUES (1, 'entry', 'BTC/USDT', 1, ?, 'open', 'BTC/USDT', 'limit', 'buy', 64000.0, "
    "0.01, 0.0, 0.01, 0.0, datetime('now'))"
)


# -- helpers ----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(n: int) -> str:
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of *values* (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of *values*."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def warm(path: Path) -> None:
    """Read *path* once so that it sits in the page cache."""
    with open(path, "rb") as fh:
        while fh.read(8 * MIB):
            pass


def sync() -> None:
    if hasattr(os, "sync"):
        os.sync()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(*paths: Path) -> None:
    for path in paths:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


def db_url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- the database -----------------------------------------------------------------------


def build_database(path: Path, target: int) -> dict[str, Any]:
    """A trading bot's database of about *target* bytes, in WAL mode, checkpointed."""
    remove(path)
    started = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-131072")
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO pairs VALUES (?, ?)", enumerate(PAIRS))
        trades = max(1000, target // (20 * 1024))
        conn.execute("BEGIN")
        conn.execute(FILL_TRADES, (1, trades))
        conn.execute(FILL_ORDERS, (1, 3 * trades))
        conn.execute("COMMIT")
        candles = book = 0
        chunk = max(2000, min(100_000, target // (8 * 1024)))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        while conn.execute("PRAGMA page_count").fetchone()[0] * page_size < target:
            conn.execute("BEGIN")
            conn.execute(FILL_CANDLES, (candles + 1, 4 * chunk))
            conn.execute(FILL_BOOK, (book + 1, chunk))
            conn.execute("COMMIT")
            candles += 4 * chunk
            book += chunk
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = sqlite_facts.row_counts(conn)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    fsync_path(path)
    return {
        "bytes": path.stat().st_size,
        "page_size": page_size,
        "pages": pages,
        "rows": counts,
        "build_s": round(time.monotonic() - started, 1),
    }


def set_journal_mode(path: Path, mode: str) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return str(conn.execute(f"PRAGMA journal_mode={mode}").fetchone()[0])
    finally:
        conn.close()


# -- the copy variants --------------------------------------------------------------------


def copy_cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--", str(src), str(dst)], check=True)


def copy_cp_fsync(src: Path, dst: Path) -> None:
    copy_cp(src, dst)
    fsync_path(dst)


def copy_cp_fsync_sha256(src: Path, dst: Path) -> None:
    """The least a verified file copy costs: copy, make it durable, hash it."""
    copy_cp_fsync(src, dst)
    digest = hashlib.sha256()
    with open(dst, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    digest.hexdigest()


def copy_backup_api(src: Path, dst: Path) -> None:
    source = sqlite3.connect(src)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target, pages=-1)
        finally:
            target.close()
    finally:
        source.close()


def copy_vacuum_into(src: Path, dst: Path) -> None:
    source = sqlite3.connect(src, isolation_level=None)
    try:
        source.execute("VACUUM INTO ?", (str(dst),))
    finally:
        source.close()


class StepTimer:
    """Times dbguard's backup steps by wrapping the functions ``create_backup`` calls."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for label, module, name in STEPS:
            original = getattr(module, name, None)
            if original is None:
                continue
            self._saved.append((module, name, original))
            setattr(module, name, self._wrap(label, original))
        try:
            yield
        finally:
            for module, name, original in reversed(self._saved):
                setattr(module, name, original)
            self._saved.clear()

    def _wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.current[label] = self.current.get(label, 0.0) + (
                    time.perf_counter() - start
                )

        return timed

    def take(self, total: float) -> dict[str, float]:
        """This run's steps; "facts" without its row counts, and the rest as "other"."""
        steps = dict(self.current)
        self.current = {}
        if "facts" in steps:
            steps["facts"] -= steps.get("row counts", 0.0)
        steps["other"] = total - sum(steps.values())
        return steps


def measure_copies(
    db: Path, work: Path, guard: Guard, repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall times per variant (seconds, one per repeat) and dbguard's steps per repeat."""
    out = work / "copy.sqlite"
    copies: dict[str, Callable[[Path, Path], None]] = {
        "cp": copy_cp,
        "cp + fsync": copy_cp_fsync,
        "cp + fsync + sha256": copy_cp_fsync_sha256,
        "backup API, one step": copy_backup_api,
        "VACUUM INTO": copy_vacuum_into,
    }
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    steps: dict[str, list[float]] = {}
    timer = StepTimer()
    for r in range(repeat):
        order = list(VARIANTS)
        random.Random(r).shuffle(order)  # a new order per repeat: no fixed predecessor
        for name in order:
            remove(out)
            sync()
            warm(db)
            gc.collect()
            if name == "dbguard backup":
                with timer.installed():
                    start = time.perf_counter()
                    manifest = guard.backup("manual")
                    elapsed = time.perf_counter() - start
                for label, seconds in timer.take(elapsed).items():
                    steps.setdefault(label, []).append(seconds)
                guard.catalog.delete(manifest)
            else:
                start = time.perf_counter()
                copies[name](db, out)
                elapsed = time.perf_counter() - start
            times[name].append(elapsed)
        remove(out)
    sync()
    return times, steps


# -- the writer -------------------------------------------------------------------------


def writer_main(db: str) -> int:
    """The writer process: one small commit every 5 ms until stdin closes."""
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    conn = sqlite3.connect(db, timeout=WRITER_BUSY_TIMEOUT_S)
    clock = time.monotonic
    records: list[tuple[float, float, int]] = []
    other_errors: list[str] = []
    pid = os.getpid()
    next_at = clock()
    i = 0
    while not stop.is_set():
        i += 1
        start = clock()
        status = 1
        try:
            conn.execute(WRITER_INSERT, (f"w{pid}-{i}",))
            conn.commit()
        except sqlite3.OperationalError as exc:
            status = 0 if "database is locked" in str(exc) else -1
            if status < 0 and len(other_errors) < 10:
                other_errors.append(str(exc))
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        end = clock()
        records.append((start, end, status))
        if i == 1:
            print("ready", flush=True)
        next_at += WRITER_PERIOD_S
        delay = next_at - clock()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = clock()  # late: carry on from now, no burst to catch up
    conn.close()
    json.dump({"records": records, "other_errors": other_errors}, sys.stdout)
    return 0


def writer_stats(records: list[list[float]], begin: float, end: float) -> dict[str, Any]:
    """The writer's commits that overlapped [begin, end], and those before *begin*."""
    during = [r for r in records if r[0] <= end and r[1] >= begin]
    before = [r for r in records if r[1] < begin]
    ok_ms = [(r[1] - r[0]) * 1000 for r in during if r[2] == 1]
    base_ms = [(r[1] - r[0]) * 1000 for r in before if r[2] == 1]
    return {
        "commits": len(ok_ms),
        "locked_errors": sum(1 for r in during if r[2] == 0),
        "other_errors": sum(1 for r in during if r[2] < 0),
        "latencies_ms": ok_ms,
        "baseline_commits": len(base_ms),
        "baseline_latencies_ms": base_ms,
    }


def measure_writer(
    db: Path, guard: Guard, mode: str, repeat: int, script: Path
) -> dict[str, Any]:
    """dbguard's backup with a writer committing every 5 ms, the database in *mode*."""
    actual = set_journal_mode(db, mode)
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        sync()
        warm(db)
        proc = subprocess.Popen(
            [sys.executable, str(script), "--writer", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("bench: the writer process did not start")
            time.sleep(WRITER_BEFORE_S)
            begin = time.monotonic()
            manifest = guard.backup("manual")
            end = time.monotonic()
            time.sleep(WRITER_AFTER_S)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out, _ = proc.communicate(input="")
        data = json.loads(out)
        stats = writer_stats(data["records"], begin, end)
        stats["backup_s"] = end - begin
        stats["other_error_messages"] = data["other_errors"]
        runs.append(stats)
        guard.catalog.delete(manifest)
    if actual != "wal":
        set_journal_mode(db, "WAL")
    pooled = [ms for run in runs for ms in run["latencies_ms"]]
    baseline = [ms for run in runs for ms in run["baseline_latencies_ms"]]
    return {
        "journal_mode": actual,
        "runs": len(runs),
        "backup_s": spread([run["backup_s"] for run in runs]),
        "commits": sum(run["commits"] for run in runs),
        "locked_errors": sum(run["locked_errors"] for run in runs),
        "other_errors": sum(run["other_errors"] for run in runs),
        "other_error_messages": sorted({m for run in runs for m in run["other_error_messages"]}),
        # Pooled over every commit of every run that overlapped a backup.
        "p50_ms": percentile(pooled, 0.50),
        "p99_ms": percentile(pooled, 0.99),
        "max_ms": max(pooled, default=math.nan),
        # The same per run: median, min and max over the runs.
        "per_run_p99_ms": spread([percentile(run["latencies_ms"], 0.99) for run in runs]),
        "per_run_max_ms": spread([max(run["latencies_ms"], default=math.nan) for run in runs]),
        "baseline_p50_ms": percentile(baseline, 0.50),
        "baseline_p99_ms": percentile(baseline, 0.99),
        "baseline_max_ms": max(baseline, default=math.nan),
    }


# -- peak memory --------------------------------------------------------------------------


def maxrss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def rss_child_main(db: str) -> int:
    """The fresh child process: ru_maxrss growth across one dbguard backup.

    On Linux a process started with exec inherits the ru_maxrss of the process that
    started it (the kernel keeps the pre-exec peak), here the benchmark's own, which
    would hide the growth. So the child forks once and measures in the forked process,
    whose peak starts at its own size.
    """
    if hasattr(os, "fork"):
        sys.stdout.flush()
        pid = os.fork()
        if pid:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 1
    try:
        guard = Guard(db_url=db_url(Path(db)))
        conn = sqlite3.connect(db)
        conn.execute("SELECT count(*) FROM trades").fetchone()
        gc.collect()
        before = maxrss_mib()
        manifest = guard.backup("manual")
        after = maxrss_mib()
        conn.close()
        guard.close()
        json.dump({"before_mib": before, "after_mib": after, "growth_mib": after - before,
                   "backup_id": manifest.id}, sys.stdout)
        sys.stdout.flush()
        code = 0
    finally:
        if hasattr(os, "fork"):
            os._exit(code)
    return code


def measure_rss(db: Path, guard: Guard, repeat: int, script: Path) -> dict[str, Any]:
    if sys.platform == "win32":
        return {"skipped": "ru_maxrss is not available on Windows"}
    runs = []
    for _ in range(repeat):
        sync()
        warm(db)
        out = subprocess.run(
            [sys.executable, str(script), "--rss-child", str(db)],
            check=True, capture_output=True, text=True,
        ).stdout
        runs.append(json.loads(out))
        guard.catalog.delete(guard.catalog.get(runs[-1]["backup_id"]))
    return {
        "growth_mib": spread([run["growth_mib"] for run in runs]),
        "before_mib": spread([run["before_mib"] for run in runs]),
    }


# -- one size -----------------------------------------------------------------------------


def run_size(size: int, work: Path, repeat: int, script: Path) -> dict[str, Any]:
    db = work / "tradesv3.sqlite"
    database = build_database(db, size)
    guard = Guard(db_url=db_url(db))
    try:
        times, steps = measure_copies(db, work, guard, repeat)
        cp = times["cp"]
        variants = {
            name: {
                "seconds": spread(values),
                "ratio_cp": spread([v / c for v, c in zip(values, cp, strict=True)]),
                "runs": values,
            }
            for name, values in times.items()
        }
        breakdown = {label: {**spread(values), "runs": values} for label, values in steps.items()}
        writer = {
            mode: measure_writer(db, guard, mode, repeat, script) for mode in ("WAL", "DELETE")
        }
        rss = measure_rss(db, guard, repeat, script)
    finally:
        guard.close()
        remove(db)
        shutil.rmtree(work / "tradesv3.sqlite.dbguard", ignore_errors=True)
    return {
        "size": size,
        "label": size_label(size),
        "database": database,
        "variants": variants,
        "dbguard_steps": breakdown,
        "writer": writer,
        "rss": rss,
    }


def verdicts(result: dict[str, Any]) -> list[tuple[bool, str]]:
    """(passed, text) per target for one size."""
    out = []
    label = result["label"]
    ratio = result["variants"]["dbguard backup"]["ratio_cp"]["median"]
    out.append((ratio <= TARGET_RATIO_CP,
                f"{label}: dbguard backup {ratio:.2f}x cp (median), target <= "
                f"{TARGET_RATIO_CP}x"))
    wal = result["writer"]["WAL"]
    out.append((wal["p99_ms"] <= TARGET_WRITER_P99_MS,
                f"{label}: WAL writer p99 {wal['p99_ms']:.1f} ms during the backup, target "
                f"<= {TARGET_WRITER_P99_MS:.0f} ms"))
    out.append((wal["max_ms"] <= TARGET_WRITER_MAX_MS and wal["locked_errors"] == 0,
                f"{label}: WAL writer max {wal['max_ms']:.1f} ms, {wal['locked_errors']} "
                f"'database is locked', target <= {TARGET_WRITER_MAX_MS:.0f} ms and 0"))
    rss = result["rss"]
    if result["size"] >= RSS_TARGET_SIZE and "growth_mib" in rss:
        worst = rss["growth_mib"]["max"]
        out.append((worst <= TARGET_RSS_MIB,
                    f"{label}: peak RSS growth {worst:.1f} MiB (worst run), target <= "
                    f"{TARGET_RSS_MIB:.0f} MiB"))
    return out


# -- output -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cp_version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        cp_version = subprocess.run(["cp", "--version"], capture_output=True, text=True,
                                    check=False).stdout.split("\n", 1)[0]
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cp": cp_version,
        "dbguard": __version__,
    }


def no_nan(value: Any) -> Any:
    """*value* with NaN (a figure that could not be measured) as null, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def fmt_spread(s: dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def print_size(result: dict[str, Any], repeat: int) -> None:
    db = result["database"]
    rows = sum(db["rows"].values())
    print()
    print(f"== {result['label']}: {db['bytes'] / MIB:,.1f} MiB, {rows:,} rows in "
          f"{len(db['rows'])} tables, WAL, page size {db['page_size']} "
          f"(built in {db['build_s']:.0f} s)")
    print(f"copies: {repeat} interleaved repeats, warm page cache (the database is read "
          "once before every variant), seconds: median (min-max)")
    print(f"  {'variant':<28}{'seconds':>24}{'x cp':>22}")
    for name, v in result["variants"].items():
        print(f"  {name:<28}{fmt_spread(v['seconds'], 3):>24}{fmt_spread(v['ratio_cp']):>22}")
    print("  dbguard backup by step:")
    for label, s in result["dbguard_steps"].items():
        print(f"    {label:<26}{fmt_spread(s, 3):>24}")
    print("writer: one commit every 5 ms from another process during dbguard's backup "
          "(ms; pooled over the runs)")
    print(f"  {'mode':<8}{'backup s':>20}{'commits':>9}{'p50':>8}{'p99':>8}{'max':>9}"
          f"{'locked':>8}{'   before the backup: p50 / p99 / max':>34}")
    for mode, w in result["writer"].items():
        print(f"  {mode:<8}{fmt_spread(w['backup_s']):>20}{w['commits']:>9}"
              f"{w['p50_ms']:>8.1f}{w['p99_ms']:>8.1f}{w['max_ms']:>9.1f}"
              f"{w['locked_errors']:>8}      {w['baseline_p50_ms']:.1f} / "
              f"{w['baseline_p99_ms']:.1f} / {w['baseline_max_ms']:.1f}")
        print(f"  {'':<8}per run: p99 {fmt_spread(w['per_run_p99_ms'], 1)}, "
              f"max {fmt_spread(w['per_run_max_ms'], 1)}"
              + (f"; other errors: {w['other_errors']}" if w["other_errors"] else ""))
    rss = result["rss"]
    if "growth_mib" in rss:
        print(f"peak RSS growth across one backup (fresh process): "
              f"{fmt_spread(rss['growth_mib'], 1)} MiB, from "
              f"{rss['before_mib']['median']:.1f} MiB before it")
    else:
        print(f"peak RSS: skipped ({rss['skipped']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100M,1G",
                        help="database sizes, comma separated (default 100M,1G)")
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="repeats of every measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--dir", type=Path, default=None, metavar="PATH",
                        help="where to build the databases (default: a temporary directory)")
    parser.add_argument("--writer", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        return writer_main(args.writer)
    if args.rss_child:
        return rss_child_main(args.rss_child)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected sizes like 100M,1G")
    if not sizes or min(sizes) < MIB or args.repeat < 1:
        parser.error("--sizes must be at least 1M each and --repeat at least 1")

    script = Path(__file__).resolve()
    parent = args.dir.expanduser().resolve() if args.dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dbguard-bench-backup-", dir=parent))
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for size in sizes:
            need = 5 * size + 256 * MIB
            free = shutil.disk_usage(work).free
            if free < need:
                skipped.append(f"{size_label(size)}: needs {need / MIB:,.0f} MiB free in "
                               f"{work}, {free / MIB:,.0f} MiB free")
                continue
            if not args.json:
                print(f"building and measuring {size_label(size)} in {work} ...",
                      file=sys.stderr, flush=True)
            results.append(run_size(size, work, args.repeat, script))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = [c for result in results for c in verdicts(result)]
    figures = {
        "machine": machine(),
        "repeat": args.repeat,
        "results": results,
        "skipped": skipped,
        "targets": {
            "dbguard_over_cp": TARGET_RATIO_CP,
            "wal_writer_p99_ms": TARGET_WRITER_P99_MS,
            "wal_writer_max_ms": TARGET_WRITER_MAX_MS,
            "rss_growth_mib_at_1gib": TARGET_RSS_MIB,
        },
        "verdicts": [{"pass": ok, "target": text} for ok, text in checks],
    }
    if args.json:
        print(json.dumps(no_nan(figures), indent=2))
        return 0

    m = figures["machine"]
    print(f"dbguard {m['dbguard']} backup benchmark: {m['implementation']} {m['python']}, "
          f"SQLite {m['sqlite']}, {m['cp']}, {m['cpus']} CPUs, {args.repeat} repeats")
    for result in results:
        print_size(result, args.repeat)
    for text in skipped:
        print(f"skipped {text}")
    print()
    for ok, text in checks:
        print(f"{'PASS' if ok else 'MISS'}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
