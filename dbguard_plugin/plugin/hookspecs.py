"""Hook specifications: how hosts and plugins talk to dbguard.

Hosts (or their adapters) call the lifecycle hooks through :class:`dbguard_plugin.Guard`;
plugins implement any hook with ``@dbguard_plugin.hookimpl``. Every hook is named
``dbguard_*``; the veto hook stops at the first plugin that answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.core.state import Snapshot
    from dbguard_plugin.events import Operation, OrderEvent, SessionInfo

hookspec = pluggy.HookspecMarker("dbguard")
hookimpl = pluggy.HookimplMarker("dbguard")


@hookspec
def dbguard_session_started(guard: Guard, session: SessionInfo) -> None:
    """A trading session started: the host is about to place its first order.

    Called after the host opened its database and before its first order.
    """


@hookspec
def dbguard_session_ending(guard: Guard, session: SessionInfo) -> None:
    """A trading session is ending: the host made its final commit and places no more orders.

    Called once per session, before the host closes its database connections.
    """


@hookspec
def dbguard_order_event(guard: Guard, event: OrderEvent) -> None:
    """An order changed state: submitted, accepted, partially filled, filled, cancelled,
    rejected or expired.

    Events may arrive duplicated, out of order or for ids never seen; implementations must
    tolerate all three. Called on the host's trading path: keep it fast and never do I/O.
    """


@hookspec(firstresult=True)
def dbguard_veto(guard: Guard, operation: Operation, state: Snapshot) -> str | None:
    """Refuse *operation* on the guarded database, or raise no objection.

    Return a non-empty string, the reason shown to the operator, to veto the operation.
    Return None to raise no objection; the next plugin is then asked.
    Stops at the first non-None result. The guard's own rules (orders in flight, an
    active session, another operation holding the lease) are always applied as well and
    cannot be switched off by a plugin. A plugin veto can be overridden with ``force``,
    which the audit log records.
    """


@hookspec
def dbguard_release_connections(guard: Guard, operation: Operation) -> None:
    """The host must release its database connections before *operation* replaces the file.

    Implemented by hosts (for example: dispose of a SQLAlchemy engine's pool). Called with
    the lease held exclusive, so no new order can start meanwhile.
    """


@hookspec
def dbguard_refresh(guard: Guard, operation: Operation) -> None:
    """The database was replaced by *operation*: the host must reload its state.

    Implemented by hosts and UIs (for example: remove scoped sessions, re-read open
    trades, redraw). Called after the replacement was verified, with the lease still held.
    """
