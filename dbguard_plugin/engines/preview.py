"""What a restore would change: rows per table, rows lost, and open orders and trades.

The live database is opened read-only and the backup ATTACHed read-only; nothing is
written. The tables and columns that mean "open order" and "open trade" come from the
configuration, with freqtrade's schema as the default.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbguard_plugin.engines.sqlite.backup import sqlite_uri
from dbguard_plugin.engines.sqlite.facts import quote, table_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenRule:
    """Rows of *table* where *where* holds are open; *key* identifies them."""

    table: str
    key: str
    where: str


#: freqtrade: Order.ft_is_open and Trade.is_open
DEFAULT_OPEN_ORDERS = OpenRule("orders", "id", "ft_is_open = 1")
DEFAULT_OPEN_TRADES = OpenRule("trades", "id", "is_open = 1")


@dataclass(frozen=True)
class TableChange:
    table: str
    rows_now: int | None
    rows_backup: int | None
    #: None when not counted (rows_lost=False)
    missing_from_backup: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows_now": self.rows_now,
                "rows_backup": self.rows_backup,
                "missing_from_backup": self.missing_from_backup}


@dataclass(frozen=True)
class Preview:
    tables: list[TableChange] = field(default_factory=list)
    #: Open now, and absent or not open in the backup: restoring forgets them.
    open_orders_lost: list[str] = field(default_factory=list)
    open_trades_lost: list[str] = field(default_factory=list)
    #: Open in the backup but not open (or gone) now: restoring resurrects them.
    orders_resurrected: list[str] = field(default_factory=list)
    trades_resurrected: list[str] = field(default_factory=list)

    @property
    def drops_open_positions(self) -> bool:
        return bool(self.open_orders_lost or self.open_trades_lost)

    def losses(self) -> list[str]:
        """Open trades and orders the restore would forget (these need --force)."""
        out = []
        if self.open_trades_lost:
            out.append(f"{_count_of(self.open_trades_lost, 'open trade')} now missing or "
                       f"closed in the backup: {_ids(self.open_trades_lost)}")
        if self.open_orders_lost:
            out.append(f"{_count_of(self.open_orders_lost, 'open order')} now missing or "
                       f"closed in the backup: {_ids(self.open_orders_lost)}")
        return out

    def warnings(self) -> list[str]:
        out = self.losses()
        if self.trades_resurrected:
            out.append(f"{_count_of(self.trades_resurrected, 'trade')} not open now but open "
                       f"in the backup: {_ids(self.trades_resurrected)}")
        if self.orders_resurrected:
            out.append(f"{_count_of(self.orders_resurrected, 'order')} not open now but open "
                       f"in the backup: {_ids(self.orders_resurrected)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": [t.as_dict() for t in self.tables],
            "open_orders_lost": self.open_orders_lost,
            "open_trades_lost": self.open_trades_lost,
            "orders_resurrected": self.orders_resurrected,
            "trades_resurrected": self.trades_resurrected,
            "drops_open_positions": self.drops_open_positions,
            "warnings": self.warnings(),
        }

    def render(self) -> str:
        lines = [f"{'TABLE':<28} {'NOW':>10} {'BACKUP':>10} {'LOST':>8}"]
        for t in self.tables:
            lines.append(
                f"{t.table:<28} {_n(t.rows_now):>10} {_n(t.rows_backup):>10} "
                f"{_n(t.missing_from_backup):>8}"
            )
        lines += [f"! {w}" for w in self.warnings()]
        return "\n".join(lines)


def _count_of(ids: list[str], noun: str) -> str:
    return f"{len(ids)} {noun}" + ("" if len(ids) == 1 else "s")


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


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
