"""Hook specifications: how hosts and plugins talk to dbguard.

Hosts (or their adapters) call the lifecycle hooks through :class:`dbguard_plugin.Guard`;
plugins implement any hook with ``@dbguard_plugin.hookimpl``. Every hook is named
``dbguard_*``; the veto hook stops at the first plugin that answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pluggy

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.events import Operation, OrderEvent, SessionInfo
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.settings.config import Config
from dbguard_plugin.state import Snapshot, TradingState
from dbguard_plugin.verdict import Verdict

hookspec = pluggy.HookspecMarker("dbguard")
hookimpl = pluggy.HookimplMarker("dbguard")


class GuardAPI(Protocol):
    """What every hook is given as ``guard``: the :class:`dbguard_plugin.Guard` itself.

    Spelled as a protocol here because the guard sits above the plugin system (it calls
    the hooks); a hook implementation may annotate its parameter with ``Guard``.
    """

    config: Config
    location: DatabaseLocation
    catalog: Catalog
    state: TradingState

    @property
    def paused(self) -> str | None: ...

    @property
    def audit_path(self) -> Path: ...

    def check(self, operation: Operation | str) -> Verdict: ...

    def status(self) -> dict[str, Any]: ...


@hookspec
def dbguard_session_started(guard: GuardAPI, session: SessionInfo) -> None:
    """A trading session started: the host is about to place its first order.

    Called after the host opened its database and before its first order.
    """


@hookspec
def dbguard_session_ending(guard: GuardAPI, session: SessionInfo) -> None:
    """A trading session is ending: the host made its final commit and places no more orders.

    Called once per session, before the host closes its database connections.
    """


@hookspec
def dbguard_order_event(guard: GuardAPI, event: OrderEvent) -> None:
    """An order changed state: submitted, accepted, partially filled, filled, cancelled,
    rejected or expired.

    Events may arrive duplicated, out of order or for ids never seen; implementations must
    tolerate all three. Called on the host's trading path: keep it fast and never do I/O.
    """


@hookspec(firstresult=True)
def dbguard_veto(guard: GuardAPI, operation: Operation, state: Snapshot) -> str | None:
    """Refuse *operation* on the guarded database, or raise no objection.

    Return a non-empty string, the reason shown to the operator, to veto the operation.
    Return None to raise no objection; the next plugin is then asked.
    Stops at the first non-None result. The guard's own rules (orders in flight, an
    active session, another operation holding the lease) are always applied as well and
    cannot be switched off by a plugin. A plugin veto can be overridden with ``force``,
    which the audit log records.
    """


@hookspec
def dbguard_release_connections(guard: GuardAPI, operation: Operation) -> None:
    """The host must release its database connections before *operation* replaces the file.

    Implemented by hosts (for example: dispose of a SQLAlchemy engine's pool). Called with
    the lease held exclusive, so no new order can start meanwhile.
    """


@hookspec
def dbguard_refresh(guard: GuardAPI, operation: Operation) -> None:
    """The database was replaced by *operation*: the host must reload its state.

    Implemented by hosts and UIs (for example: remove scoped sessions, re-read open
    trades, redraw). Called after the replacement was verified, with the lease still held.
    """
