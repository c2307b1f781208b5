"""dbguard: guards a trading bot's database while it trades.

The names below are loaded on first use, so that ``dbguard --help`` or a host importing
the events does not pay for the events, the guard, SQLAlchemy and the engines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dbguard_plugin import renamed
from dbguard_plugin.version import __version__

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.events import Operation, OrderEvent, OrderKind, SessionInfo
    from dbguard_plugin.plugin.hookspecs import hookimpl
    from dbguard_plugin.verdict import Verdict

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

_LAZY = {
    "Operation": "dbguard_plugin.events",
    "OrderEvent": "dbguard_plugin.events",
    "OrderKind": "dbguard_plugin.events",
    "SessionInfo": "dbguard_plugin.events",
    "Guard": "dbguard_plugin.core.guard",
    "Verdict": "dbguard_plugin.verdict",
    "hookimpl": "dbguard_plugin.plugin.hookspecs",
}

renamed.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if renamed.new_name(name) is not None:
        return renamed.load(name)
    raise AttributeError(f"module 'dbguard_plugin' has no attribute {name!r}")
