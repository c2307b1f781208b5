"""What a restore would change: rows per table, rows lost, and open orders and trades.

The values every engine's preview fills in (see :mod:`dbguard_plugin.engines.sqlite.preview`
and :mod:`dbguard_plugin.engines.server.preview`). The tables and columns that mean "open
order" and "open trade" come from the configuration, with freqtrade's schema as the
default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        gone = "now missing or closed in the backup"
        return [*_said(self.open_trades_lost, "open trade", gone),
                *_said(self.open_orders_lost, "open order", gone)]

    def warnings(self) -> list[str]:
        back = "not open now but open in the backup"
        return [*self.losses(), *_said(self.trades_resurrected, "trade", back),
                *_said(self.orders_resurrected, "order", back)]

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
                f"{printable(t.table):<28} {_n(t.rows_now):>10} {_n(t.rows_backup):>10} "
                f"{_n(t.missing_from_backup):>8}"
            )
        lines += [f"! {w}" for w in self.warnings()]
        return "\n".join(lines)


def _said(ids: list[str], noun: str, what: str) -> list[str]:
    """One warning line about *ids*, or none when there are none."""
    return [f"{_count_of(ids, noun)} {what}: {_ids(ids)}"] if ids else []


def _count_of(ids: list[str], noun: str) -> str:
    return f"{len(ids)} {noun}" + ("" if len(ids) == 1 else "s")


def printable(text: str) -> str:
    """*text* (a table name, a backup's note) as a terminal should show it: a line break
    or an escape sequence in it is shown escaped, never sent to the terminal."""
    return text if text.isprintable() else repr(text)[1:-1]


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
