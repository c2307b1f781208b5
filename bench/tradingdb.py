"""The trading-bot database the backup and restore benchmarks build, and their helpers.

A freqtrade-like schema (trades, orders with indexes) plus bulk tables (candles, order
book) filled with random but compressible rows up to a target size, in WAL mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dbguard_plugin import __version__
from dbguard_plugin.engines.sqlite import facts as sqlite_facts

MIB = 1 << 20
GIB = 1 << 30


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


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(n: int) -> str:
    if n >= GIB and n % GIB == 0:
        return f"{n >> 30} GiB"
    if n >= MIB:
        return f"{n / MIB:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of *values* (nan when empty)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def warm(*paths: Path) -> None:
    """Read each of *paths* once so that it sits in the page cache."""
    for path in paths:
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


# -- shared by the benchmark scripts --------------------------------------------------


def copy_cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--", str(src), str(dst)], check=True)


def copy_cp_fsync(src: Path, dst: Path) -> None:
    copy_cp(src, dst)
    fsync_path(dst)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def maxrss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS


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
