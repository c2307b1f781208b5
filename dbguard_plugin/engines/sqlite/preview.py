"""What restoring a SQLite backup would change, computed read-only.

The live database is opened read-only and the backup ATTACHed read-only; nothing is
written.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from dbguard_plugin.engines.preview import (
    DEFAULT_OPEN_ORDERS,
    DEFAULT_OPEN_TRADES,
    OpenRule,
    Preview,
    TableChange,
)
from dbguard_plugin.engines.sqlite.backup import sqlite_uri
from dbguard_plugin.engines.sqlite.facts import quote, table_names

log = logging.getLogger(__name__)


def compute(
    live: Path, backup: Path,
    open_orders: OpenRule = DEFAULT_OPEN_ORDERS, open_trades: OpenRule = DEFAULT_OPEN_TRADES,
    *, rows_lost: bool = True,
) -> Preview:
    """Compare the live database with a plain SQLite backup file, read-only.

    ``rows_lost=False`` skips counting lost rows by primary key (a scan of every table,
    most of a preview's time) and keeps the open-position check the engine needs.
    """
    if not live.exists():
        conn = sqlite3.connect(":memory:")
        now_tables: list[str] = []
    else:
        # read-write (read-only where the file is write-protected): a hot journal that
        # a killed writer left is rolled back as SQLite does, not reported as damage
        conn = sqlite3.connect(sqlite_uri(live, "rw"), uri=True, timeout=30)
        now_tables = table_names(conn)
    try:
        conn.execute("ATTACH DATABASE ? AS b", (sqlite_uri(backup, "ro"),))
        backup_tables = [r[0] for r in conn.execute(
            "SELECT name FROM b.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )]
        changes = []
        for name in sorted(set(now_tables) | set(backup_tables)):
            now = _count(conn, "main", name) if name in now_tables else None
            then = _count(conn, "b", name) if name in backup_tables else None
            missing: int | None = now or 0
            if now and then is not None:
                missing = _missing(conn, name) if rows_lost else None
            changes.append(TableChange(name, now, then, missing))
        orders_lost, orders_back = _open_diff(conn, open_orders, now_tables, backup_tables)
        trades_lost, trades_back = _open_diff(conn, open_trades, now_tables, backup_tables)
        return Preview(changes, orders_lost, trades_lost, orders_back, trades_back)
    finally:
        conn.close()


def _count(conn: sqlite3.Connection, schema: str, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {schema}.{quote(table)}").fetchone()[0])


def _key_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    info = conn.execute(f"PRAGMA main.table_info({quote(table)})").fetchall()
    keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
    return keys or ["rowid"]


def _missing(conn: sqlite3.Connection, table: str) -> int:
    """Rows in the live table whose primary key the backup's table does not have."""
    keys = _key_columns(conn, table)
    cols = ", ".join(quote(k) if k != "rowid" else "rowid" for k in keys)
    try:
        return int(conn.execute(
            f"SELECT count(*) FROM main.{quote(table)} WHERE ({cols}) NOT IN "
            f"(SELECT {cols} FROM b.{quote(table)})"
        ).fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the key columns differ between the two schemas: counts say enough


def _open_diff(
    conn: sqlite3.Connection, rule: OpenRule, now_tables: list[str], backup_tables: list[str]
) -> tuple[list[str], list[str]]:
    if rule.table not in now_tables:
        return [], []
    table, key = quote(rule.table), quote(rule.key)
    try:
        open_now = {str(r[0]) for r in conn.execute(
            f"SELECT {key} FROM main.{table} WHERE {rule.where}")}
        if rule.table in backup_tables:
            open_then = {str(r[0]) for r in conn.execute(
                f"SELECT {key} FROM b.{table} WHERE {rule.where}")}
        else:
            open_then = set()
    except sqlite3.OperationalError as exc:
        # The table is there but the rule does not fit it: say so, the protection is off.
        log.warning("dbguard: open rule for table %s (key %s, where %s) does not fit this "
                    "schema (%s); open positions in it are not checked", rule.table, rule.key,
                    rule.where, exc)
        return [], []
    lost = sorted(open_now - open_then, key=_natural)
    back = sorted(open_then - open_now, key=_natural)
    return lost, back


def _natural(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)
