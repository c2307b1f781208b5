"""dbguard: guards a trading bot's database while it trades."""

from __future__ import annotations

__version__ = "0.1.0"

from dbguard_plugin.events import Operation, OrderEvent, OrderKind, SessionInfo
from dbguard_plugin.guard import Guard, Verdict
from dbguard_plugin.hookspecs import hookimpl

__all__ = [
    "Guard",
    "Operation",
    "OrderEvent",
    "OrderKind",
    "SessionInfo",
    "Verdict",
    "__version__",
    "hookimpl",
]
