"""The guard: one per database in a process. Hosts feed it; operators ask it.

The Guard is the host's API and delegates: order tracking, the lease and the pause to
:mod:`~dbguard_plugin.core.trading`, backups to :mod:`~dbguard_plugin.core.backups`, the
rules to :mod:`~dbguard_plugin.core.vetoes`.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core import audit, report, vetoes
from dbguard_plugin.core.backups import Backups, catalog_for
from dbguard_plugin.core.trading import Trading
from dbguard_plugin.core.watch import Watch
from dbguard_plugin.engines import check_source, open_lease
from dbguard_plugin.errors import FAULTS, ConfigError
from dbguard_plugin.events import Operation, OrderEvent, OrderKind, SessionInfo, parse_kind
from dbguard_plugin.location import DatabaseLocation, adopt_legacy_state_dir, locate
from dbguard_plugin.plugin.manager import RECOVERY, TRACKING, load_plugins
from dbguard_plugin.settings.config import Config, resolve
from dbguard_plugin.verdict import Reason, Verdict

if TYPE_CHECKING:
    from dbguard_plugin.engines.backup import Progress

__all__ = ["Guard", "Reason", "Verdict"]


class Guard:
    """Guards one database: tracks this process's trading and answers operators.

    A host creates one Guard per database and calls :meth:`start_session`,
    :meth:`admit_order`, :meth:`order_event` and :meth:`end_session`. An operator (the CLI,
    a UI) calls :meth:`check` or runs an operation inside :meth:`operation`.
    """

    def __init__(self, config: Config | None = None, *, db_url: str | None = None,
                 plugin_manager: pluggy.PluginManager | None = None) -> None:
        config = (config or Config()).with_db(db_url)
        if not config.db_url:
            raise ConfigError(
                f"{config.source}: no database: set dbguard.db_url in the config file "
                "or give --db URL (e.g. sqlite:////path/to/tradesv3.sqlite)")
        self.config = config
        self.location: DatabaseLocation = locate(config.db_url, config.state_dir)
        if config.state_dir is None:
            adopt_legacy_state_dir(self.location)
        self.pm = plugin_manager or load_plugins()
        self._hook = self.pm.hook
        self.lease = open_lease(self.location)
        self.catalog = catalog_for(config, self.location)
        self.trading = Trading(self, self.location, self.lease, self.catalog)
        self.state = self.trading.state
        self.backups = Backups(self, config, self.location, self.catalog, self.trading)
        self._watch = Watch(self.location.state_dir)

    @classmethod
    def from_config(cls, path: str | Path | None = None, db_url: str | None = None,
                    profile: str | None = None) -> Guard:
        """The Guard for a bot config, with *profile* (default: the active one) applied."""
        return cls(resolve(path, db_url, profile))

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def paused(self) -> str | None:
        """Why new orders are paused (a failed required backup, say), or None."""
        return self.trading.paused

    @property
    def audit_path(self) -> Path:
        return audit.path_for(self.config.audit_log, self.location.state_dir)

    # -- host side: lifecycle ----------------------------------------------------------

    def start_session(self, session_id: str | None = None, *, host: str = "custom",
                      dry_run: bool = False) -> SessionInfo:
        """Tell dbguard a trading session starts; call before the first order."""
        now = time.time()
        session = SessionInfo(session_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
                              + f"-{os.getpid()}", now, host, dry_run)
        if self.enabled:
            self.trading.start_session(session, self.database_problem, lambda: (
                self._hook.dbguard_session_started(guard=self, session=session)))
        return session

    def refuse_unguardable(self, operation: Operation) -> None:
        """Raise VetoedError before *operation* reads through a name of a file with
        several hard links: this name's catalog, WAL and lease are not the bot's."""
        vetoes.unguardable(operation, self.location)

    def database_problem(self) -> str | None:
        """Why this database cannot be traded on safely as configured, or None: a file
        with several hard links, or no file where the catalog holds its backups."""
        return vetoes.database_problem(self.location, self.catalog)

    def end_session(self) -> SessionInfo | None:
        """Tell dbguard the session ends; call after the host's final commit."""
        session = self.state.session
        if self.enabled and session is not None:
            self.trading.end_session(lambda: (
                self._hook.dbguard_session_ending(guard=self, session=session)))
        return session

    def admit_order(self, timeout: float | None = None, *, symbol: str = "",
                    side: str = "") -> bool:
        """Ask to place a new order; False means maintenance (see docs/lifecycle): waits up
        to *timeout* (default ``maintenance_wait``); *symbol* and *side* name the order
        until it has an id. Never raises: a fault answers False (the lease must cover it)."""
        if not self.enabled:
            return True
        wait = self.config.maintenance_wait if timeout is None else timeout
        return self.trading.admit_safely(wait, symbol, side)

    def withdraw_admission(self) -> None:
        """Give back an admission whose order was not placed after all."""
        if self.enabled:
            self.trading.withdraw()

    def order_event(self, event: OrderEvent | str | int | None = None,
                    kind: OrderKind | str | None = None, *, symbol: str = "", side: str = "",
                    order_id: str | int | None = None) -> None:
        """Report an order event: ``order_event(OrderEvent(...))``, ``order_event(id,
        kind, symbol=..., side=...)`` or ``order_event(order_id=id, kind=kind)``. Never
        raises for a fault of the disk or of data; a wrong call (no kind) still raises."""
        if not self.config.enabled:
            return
        given = _event_args(event, kind, order_id, symbol, side)
        caller = self._hook.dbguard_order_event
        impls = caller.get_hookimpls()
        try:  # costs nothing until something raises; the tracker handles its own faults
            if len(impls) == 1 and impls[0].plugin_name == TRACKING:  # the hot path: no hook
                if isinstance(given, OrderEvent):
                    self.trading.on_event(given)
                else:
                    self.trading.on_order(*given, time.time())
            else:
                _through_plugins(self, given if isinstance(given, OrderEvent)
                                 else OrderEvent(*given))
        except FAULTS as exc:
            self.report_fault("order_event", exc, self.lease_outcome())

    def reconcile(self, open_orders: dict[str, tuple[str, str]]) -> None:
        """Make the tracker match the host's own list of open orders (id -> (symbol, side))."""
        if self.enabled:
            self.trading.reconcile(open_orders)

    def tick(self) -> None:
        """Call once per host loop: notices a replacement by another process (calls
        ``dbguard_refresh`` and sends ``database-replaced``, naming the operation) and takes
        the interval backup when due (``backup_interval``). After a fault it brings the
        lease and the status file up to date again. Never raises."""
        if not self.enabled:
            return
        try:
            if self.trading.resync_due:
                self.trading.resync()
            replaced = self._watch.changed()  # one stat per loop
            if replaced is not None:
                self._hook.dbguard_refresh(guard=self, operation=replaced.operation)
                replaced.announce(self)
            if self.backups.due():
                self.automatic_backup("scheduled")
        except Exception as exc:  # FAULTS, and whatever a refresh plugin raises
            self.report_fault("tick", exc, "the next tick() tries again", resync=False)

    # -- backups -----------------------------------------------------------------------

    def backup(self, reason: str = "manual", *, note: str = "",
               progress: Progress | None = None, keep: tuple[str, ...] = (),
               keep_damaged: bool = False) -> Manifest:
        """Take a verified hot backup now; prune the catalog after it (never the backups
        in *keep*). Raises on failure. With *keep_damaged* a database that fails its
        check is backed up anyway, as found, marked unverified (for a restore over it)."""
        check_source(self.location)
        return self.backups.create(reason, note=note, progress=progress, keep=keep,
                                   keep_damaged=keep_damaged)

    def automatic_backup(self, reason: str) -> bool:
        """A backup the host did not ask for: never raises. True when one was made or
        there was nothing to back up."""
        return self.backups.automatic(reason, self.backup)

    def prune(self, dry_run: bool = False, keep: tuple[str, ...] = ()) -> list[Manifest]:
        """Apply the retention policy to the catalog; return the backups removed."""
        return self.backups.prune(dry_run, keep)

    def pinned_backups(self) -> set[str]:
        """Backups an operation still needs (see :meth:`Backups.pinned`)."""
        return self.backups.pinned()

    def recover(self) -> list[str]:
        """Deprecated: call ``recover(guard)`` from ``operations.recovery``."""
        warnings.warn("Guard.recover() is deprecated: call dbguard_plugin.operations."
                      "recovery.recover(guard)", DeprecationWarning, stacklevel=2)
        # Recovery is an operation, above the guard; the built-in recovery plugin, which
        # the plugin manager registered, carries it down without an import upwards.
        plugin: Any = self.pm.get_plugin(RECOVERY) or load_plugins().get_plugin(RECOVERY)
        return list(plugin.recover(self))

    def pause_trading(self, why: str, resume_when: Callable[[], bool] | None = None) -> None:
        """Refuse new orders until *resume_when* answers True at an admission; by default
        until a verified backup newer than the session exists."""
        self.trading.pause(why, resume_when)

    # -- lease bookkeeping (used by the built-in tracking plugin) ----------------------

    def sync_lease(self, timeout: float = 0.0) -> bool:
        """Make the shared lease follow the tracker: held exactly while busy. False when
        the tracker is busy but the lease could not be taken."""
        return self.trading.sync_lease(timeout)

    def report_fault(self, call: str, exc: BaseException, outcome: str, *,
                     resync: bool = True) -> None:
        """A host call met a fault and did *outcome* instead of raising: log it and send
        ``host-fault``. With *resync*, tick() then brings lease and status file up to date."""
        self.trading.report_fault(call, exc, outcome, resync=resync)

    def lease_outcome(self) -> str:
        """Where the tracker and the lease stand after a fault, in words."""
        return self.trading.lease_outcome()

    def publish_status_soon(self) -> None:
        self.trading.publisher.publish_soon()

    def publish_status_now(self) -> None:
        self.trading.publish_now()

    # -- operator side -----------------------------------------------------------------

    def check(self, operation: Operation | str) -> Verdict:
        """Every reason *operation* may not run now. Sends ``operation-vetoed`` if any."""
        op = Operation.parse(operation)
        standing = self.trading.standing()
        vetoed = vetoes.plugin_objection(self._hook, self, op, standing.snapshot)
        verdict = vetoes.judge(op, standing, self.location, self.config, vetoed)
        vetoes.announce(self, verdict)
        return verdict

    def authorize(self, operation: Operation | str, *, force: bool = False,
                  who: str | None = None) -> Verdict:
        """Check *operation*; raise :class:`VetoedError` unless it is allowed or forced.
        ``force`` overrides an active session and plugin vetoes (audited), never orders
        in flight or a lease held by an operation."""
        return vetoes.force_or_refuse(self, self.check(operation), force, who,
                                      self.audit_path, self.location.redacted)

    @contextlib.contextmanager
    def operation(self, operation: Operation | str, *, force: bool = False,
                  who: str | None = None, timeout: float = 0.0) -> Iterator[Verdict]:
        """Hold the lease exclusive for *operation* once allowed (maintenance mode: no new
        order, no other operation); else raise :class:`VetoedError` with every reason."""
        op = Operation.parse(operation)
        if self.lease.holding_exclusive:
            raise vetoes.already_running(op)
        if not self.lease.take_exclusive(timeout):
            raise vetoes.lease_lost(op, self.check(op))
        publisher = self.trading.operation_publisher(op)
        try:
            publisher.publish_now()
            yield self.authorize(op, force=force, who=who)
        finally:
            publisher.withdraw()
            self.lease.release_exclusive()

    def status(self) -> dict[str, Any]:
        """Everything ``dbguard status`` shows, as plain data."""
        return report.guard_status(self.config, self.location, self.trading,
                                   str(self.catalog.directory), self.database_problem(),
                                   [name for name, _ in self.pm.list_name_plugin()])

    def close(self) -> None:
        """Give back everything this process holds (the host is shutting down). Never
        raises: the locks are given back even when the status file cannot be removed."""
        self.trading.close()


def _through_plugins(guard: Guard, event: OrderEvent) -> None:
    """*event* to the tracker first, always, then to the other plugins' implementations:
    one of those (even a tryfirst one) that raises, whatever it raises, can neither keep
    the tracker from the event nor reach the host; it is the host's fault, reported."""
    caller = guard.pm.hook.dbguard_order_event
    tracking = guard.pm.get_plugin(TRACKING)
    if tracking is not None:
        guard.trading.on_event(event)
        caller = guard.pm.subset_hook_caller("dbguard_order_event", remove_plugins=[tracking])
    try:
        caller(guard=guard, event=event)
    except Exception as exc:  # a plugin's code may raise anything
        guard.report_fault("order_event", exc, guard.lease_outcome())


def _event_args(event: OrderEvent | str | int | None, kind: OrderKind | str | None,
                order_id: str | int | None, symbol: str,
                side: str) -> OrderEvent | tuple[str, OrderKind, str, str]:
    """The event as given, or the plain values of one given by id: no dataclass is built
    on the hot path (the tracker takes plain values)."""
    if isinstance(event, OrderEvent):
        return event
    if event is None and order_id is None:
        raise TypeError("order_event() needs an OrderEvent or an order id")
    if kind is None:
        raise TypeError("order_event(order_id, kind): kind is required")
    return str(order_id if event is None else event), parse_kind(kind), symbol, side
