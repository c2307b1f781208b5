"""Built-in plugin: follows the host's lifecycle into the tracker, the lease and signals."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbguard_plugin import signals
from dbguard_plugin.errors import FAULTS
from dbguard_plugin.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.events import OrderEvent, SessionInfo

log = logging.getLogger(__name__)

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
    guard.trading.on_event(event)
