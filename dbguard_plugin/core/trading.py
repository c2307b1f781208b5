"""This process's side of trading: admissions, orders, the lease that covers them, the
status file that explains it, and the pause that refuses new orders.

The guard delegates its host calls here. Nothing here raises a fault of the disk or of
data into the host: each is logged, signalled (``host-fault``) and repaired at the next
tick (see :meth:`Trading.resync`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import Catalog, journal
from dbguard_plugin.core.vetoes import Standing
from dbguard_plugin.engines.lease import Lease
from dbguard_plugin.errors import FAULTS, UnsafePathError
from dbguard_plugin.events import Operation, OrderEvent, OrderKind, SessionInfo
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.state import TradingState, describe
from dbguard_plugin.status import HOSTNAME, StatusPublisher

log = logging.getLogger("dbguard_plugin.core.guard")


def never() -> bool:
    """A pause only a restart (after an operator fixed the cause) ends."""
    return False


class Trading:
    """The tracker, the lease and the status file of one guard, kept in step.

    *sender* is the guard: every signal sent from here names it, as receivers expect.
    """

    def __init__(self, sender: object, location: DatabaseLocation, lease: Lease,
                 catalog: Catalog) -> None:
        self.sender = sender
        self.location = location
        self.lease = lease
        self.catalog = catalog
        self.state = TradingState()
        self.publisher = lease.publisher("bot", self.bot_status)
        self.lock = threading.Lock()
        #: Why new orders are paused (a failed required backup), or None.
        self.paused: str | None = None
        self.resume_when: Callable[[], bool] = self.backed_up
        # Set by a fault of the lease or the status file: tick() brings both up to date.
        self.resync_due = False
        # Why the dbguard directory cannot be used, found at start_session(), or None.
        self.unsafe_dir: str | None = None

    # -- sessions ----------------------------------------------------------------------------

    def start_session(self, session: SessionInfo, problem_of: Callable[[], str | None],
                      hook: Callable[[], None]) -> None:
        """Track *session*; pause orders on a database that cannot be guarded; run the
        session-start hooks (*hook*) unless the dbguard directory is unsafe."""
        try:
            self.unsafe_dir = self._unsafe_state_dir()
            problem = self.unsafe_dir or problem_of()
            if problem is not None:
                # Trading on a database dbguard cannot guard, or on a fresh file where
                # its history used to be, is what the guard exists to prevent.
                self.pause(problem, resume_when=never)
            if self.unsafe_dir is not None:
                # Recovery, the lease and the session-start backup would all write
                # through the link: the session is only tracked, and orders stay paused.
                self.state.start_session(session)
                return
            hook()
        except Exception as exc:  # the built-in plugins contain their own; a plugin's
            if self.state.session is None:  # code may raise anything
                self.state.start_session(session)
            self.report_fault("start_session", exc, "the session is tracked in this "
                              "process; tick() tries again to publish it")

    def _unsafe_state_dir(self) -> str | None:
        """Why the dbguard directory must not be used (a symlink in its place), or None.
        A fault creating it (a full disk) is not a reason: the hooks report their own."""
        try:
            self.lease.prepare()
        except UnsafePathError as exc:
            return str(exc)
        except OSError:
            pass
        return None

    def end_session(self, hook: Callable[[], None]) -> None:
        if self.unsafe_dir is not None:  # nothing was started through the link
            self.state.end_session()
            return
        try:
            hook()
        except Exception as exc:  # a plugin's code may raise anything
            # A plugin's fault may have stopped the hook before the tracking plugin ended
            # the session: end it here, and give back what it held.
            self.state.end_session()
            with contextlib.suppress(*FAULTS):
                self.sync_lease()
            self.lease.release_session()
            self.report_fault("end_session", exc, "the session ended and the lease is "
                              "released")

    # -- admissions and orders -----------------------------------------------------------

    def admit_safely(self, wait: float, symbol: str, side: str) -> bool:
        try:
            return self.admit(wait, describe(symbol, side))
        except FAULTS as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.report_fault("admit_order", exc, "the new order was refused")
            signals.notify(signals.maintenance_refused, self.sender,
                           holder=f"dbguard cannot record the admission ({error})")
            return False

    def withdraw(self) -> None:
        if self.state.withdraw():
            try:
                self.sync_lease()
            except FAULTS as exc:
                self.report_fault("withdraw_admission", exc, self.lease_outcome())

    def reconcile(self, open_orders: dict[str, tuple[str, str]]) -> None:
        flipped = self.state.reconcile(open_orders)
        try:
            if flipped:
                self.sync_lease()
            else:
                self.publisher.publish_soon()
        except FAULTS as exc:
            self.report_fault("reconcile", exc, self.lease_outcome())


    def admit(self, wait: float, what: str) -> bool:
        if self.paused is not None and not self.resume():
            log.warning("dbguard: new order refused: %s", self.paused)
            signals.notify(signals.maintenance_refused, self.sender, holder=self.paused)
            return False
        newly = self.state.admit(what)
        try:
            if self.sync_lease(wait):
                if what and not newly:  # the lease was held already: say what is coming
                    self.publisher.publish_soon()
                return True
        except BaseException:
            self.state.withdraw()
            with contextlib.suppress(*FAULTS):
                self.sync_lease()  # gives back a lease taken for this admission alone
            raise
        self.state.withdraw()
        self.sync_lease()
        holder = self.operation_holder()
        log.warning(
            "dbguard: new order refused, database maintenance in progress%s",
            f" ({holder})" if holder else "",
        )
        signals.notify(signals.maintenance_refused, self.sender, holder=holder)
        return False

    def standing(self) -> Standing:
        """The tracker and the lease as the rules see them, now."""
        return Standing(self.state.snapshot(), self.lease.probe(),
                        self.lease.holding_exclusive, self.lease.holding_orders)

    def operation_publisher(self, op: Operation) -> StatusPublisher:
        """The status file an operation holding the lease publishes: who, what, since."""
        return self.lease.publisher("operation", lambda: {
            "role": "operation", "pid": os.getpid(), "host": HOSTNAME,
            "operation": op.value, "since": time.time(), "database": self.location.redacted})

    def operation_holder(self) -> str | None:
        for holder in self.lease.probe().others():
            if holder.role == "operation":
                return f"{holder.operation} by {holder.where()}"
        return None

    def on_event(self, event: OrderEvent) -> None:
        """:meth:`on_order` for an event already built (a plugin hook's argument)."""
        self.on_order(event.order_id, event.kind, event.symbol, event.side, event.timestamp,
                      event)

    def on_order(self, oid: str, kind: OrderKind, symbol: str, side: str, timestamp: float,
                 event: OrderEvent | None = None) -> None:
        """The tracker's side of an order event (the built-in tracking plugin's)."""
        change = self.state.record(oid, kind, symbol, side, timestamp)
        if change.flipped:
            try:
                if not self.sync_lease():
                    log.warning("dbguard: order %s is in flight but the lease is held by "
                                "an operation; the host placed it without admit_order()", oid)
            except FAULTS as exc:  # the tracker is already right, and the signal still goes
                self.report_fault("order_event", exc, self.lease_outcome())
        elif change.before is not change.after:
            self.publisher.publish_soon()
        if signals.order_state_changed.receivers:
            signals.notify(signals.order_state_changed, self.sender,
                event=event or OrderEvent(oid, kind, symbol, side, timestamp),
                before=change.before, after=change.after,
                in_flight=change.in_flight, anomaly=change.anomaly,
            )

    # -- the pause -------------------------------------------------------------------------

    def pause(self, why: str, resume_when: Callable[[], bool] | None = None) -> None:
        self.paused = why
        self.resume_when = resume_when or self.backed_up
        log.error("dbguard: %s", why)
        signals.notify(signals.orders_paused, self.sender, why=why,
                       database=self.location.redacted)

    def resume(self) -> bool:
        # Whatever paused orders last (a failed backup, say), a new backup must not
        # resume them while an interrupted operation awaits an operator's decision.
        if journal.awaits_decision(self.location.state_dir) or not self.resume_when():
            return False
        log.warning("dbguard: new orders resume: no longer true: %s", self.paused)
        self.paused = None
        return True

    def backed_up(self) -> bool:
        session = self.state.session
        since = session.started_at if session is not None else 0.0
        try:
            newest = self.catalog.newest_verified()
            # a manifest with a wrong-typed field must keep the pause, not raise
            return newest is not None and newest.created_ts >= since
        except FAULTS:
            return False

    # -- the lease and the status file -------------------------------------------------------

    def sync_lease(self, timeout: float = 0.0) -> bool:
        """Make the shared lease follow the tracker: held exactly while busy. False when
        the tracker is busy but the lease could not be taken."""
        with self.lock:
            busy = self.state.busy
            if busy and not self.lease.holding_orders:
                if not self.lease.hold_orders(timeout):
                    return False
                self.publisher.publish_now()
            elif not busy and self.lease.holding_orders:
                try:
                    self._publish_or_withdraw()
                except BaseException:
                    # A file that still lists the ended orders would mislead a reader;
                    # without one, the session lock still shows the session.
                    with contextlib.suppress(OSError):
                        self.publisher.withdraw()
                    raise
                finally:
                    # Releasing is always safe: the lock is the truth, the file explains.
                    self.lease.release_orders()
            return True

    def publish_now(self) -> None:
        with self.lock:
            self._publish_or_withdraw()

    def _publish_or_withdraw(self) -> None:
        if self.state.busy or self.state.session is not None:
            self.publisher.publish_now()
        else:
            self.publisher.withdraw()

    def bot_status(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        return {
            "role": "bot",
            "pid": os.getpid(),
            "host": HOSTNAME,
            "database": self.location.redacted,
            "updated": time.time(),
            "paused": self.paused,
            **snapshot.as_dict(),
        }

    # -- faults ------------------------------------------------------------------------------

    def report_fault(self, call: str, exc: BaseException, outcome: str, *,
                     resync: bool = True) -> None:
        if resync:
            self.resync_due = True
        error = f"{type(exc).__name__}: {exc}"
        log.error("dbguard: %s could not complete (%s); %s", call, error, outcome)
        signals.notify(signals.host_fault, self.sender, call=call, error=error,
                       outcome=outcome)

    def lease_outcome(self) -> str:
        busy, held = self.state.busy, self.lease.holding_orders
        if busy and not held:
            return ("the orders stay tracked in this process, but the lease could not be "
                    "taken, so other processes cannot see them; tick() tries again")
        if busy:
            return ("the lease is held for the orders in flight; the status file could "
                    "not be updated; tick() tries again")
        if held:
            return "the lease could not be released; tick() tries again"
        return ("nothing is in flight and the lease is released; the status file could "
                "not be updated; tick() tries again")

    def resync(self) -> None:
        """After a fault: take or give back the lease as the tracker says, mark the
        session active, and rewrite the status file."""
        self.sync_lease()
        if self.state.session is not None:
            self.lease.hold_session()
        self.publish_now()
        self.resync_due = False
        log.warning("dbguard: the lease and the status file of %s are up to date again",
                    self.location.redacted)

    def close(self) -> None:
        """Give back the lease and withdraw the status file; never raises."""
        self.publisher.close()
        fault: Exception | None = None
        with self.lock:
            try:
                self.publisher.withdraw()
            except FAULTS as exc:
                fault = exc
            finally:
                self.lease.close()
        if fault is not None:  # reported outside the lock: a receiver may call the guard
            self.report_fault("close", fault, "the lease is released; the status file could "
                              "not be removed (the lock decides, the file only explains)",
                              resync=False)
