"""Built-in plugin: follows the host's lifecycle into the tracker, the lease and signals."""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from dbguard_plugin import signals
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.events import OrderEvent, OrderKind
from dbguard_plugin.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.events import SessionInfo

log = logging.getLogger(__name__)

#: What a host call contains instead of raising: faults of the disk (a full disk, a
#: read-only directory, an I/O error), of a server, and of data read back from disk (a
#: manifest or status file with a wrong-typed field). A caller's own mistake (a missing
#: argument) is checked before any of this runs and still raises.
FAULTS: tuple[type[Exception], ...] = (
    OSError, sqlite3.Error, DbGuardError, ValueError, TypeError, LookupError,
)


@hookimpl(tryfirst=True)
def dbguard_session_started(guard: Guard, session: SessionInfo) -> None:
    guard.state.start_session(session)
    try:
        if not guard.lease.hold_session():
            log.warning("dbguard: could not mark session %s active: an operation holds "
                        "the session lock", session.session_id)
        guard.publish_status_now()
    except FAULTS as exc:
        # Caught here, not in the guard: a raising hookimpl would stop pluggy before the
        # session-start backup and the signal.
        guard.report_fault("start_session", exc, "the session is tracked in this process, "
                           "but other processes may not see it; tick() tries again")
    signals.notify(signals.session_started, guard, session=session)


@hookimpl(trylast=True)
def dbguard_session_ending(guard: Guard, session: SessionInfo) -> None:
    guard.state.end_session()
    try:
        guard.sync_lease()
        guard.publish_status_now()
    except FAULTS as exc:
        guard.report_fault("end_session", exc, "the session ended and the lease is "
                           "released; the status file could not be updated")
    finally:
        guard.lease.release_session()  # giving back is always safe
    signals.notify(signals.session_ended, guard, session=session)


@hookimpl(tryfirst=True)
def dbguard_order_event(guard: Guard, event: OrderEvent) -> None:
    on_order(guard, event.order_id, event.kind, event.symbol, event.side, event.timestamp, event)


def on_order(
    guard: Guard, oid: str, kind: OrderKind, symbol: str, side: str, timestamp: float,
    event: OrderEvent | None = None,
) -> None:
    """The tracker's side of an order event. The guard calls it directly when no other
    plugin implements dbguard_order_event, which saves the hook call on the hot path."""
    change = guard.state.record(oid, kind, symbol, side, timestamp)
    if change.flipped:
        try:
            if not guard.sync_lease():
                log.warning("dbguard: order %s is in flight but the lease is held by an "
                            "operation; the host placed it without admit_order()", oid)
        except FAULTS as exc:  # the tracker is already right, and the signal still goes
            guard.report_fault("order_event", exc, guard.lease_outcome())
    elif change.before is not change.after:
        guard.publish_status_soon()
    if signals.order_state_changed.receivers:
        signals.notify(signals.order_state_changed, guard,
            event=event or OrderEvent(oid, kind, symbol, side, timestamp),
            before=change.before, after=change.after,
            in_flight=change.in_flight, anomaly=change.anomaly,
        )
