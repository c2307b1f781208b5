"""The guard: one per database in a process. Hosts feed it; operators ask it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy

from dbguard_plugin import signals
from dbguard_plugin.builtin import tracking
from dbguard_plugin.catalog import Catalog, journal
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.retention import Retention, prune
from dbguard_plugin.core import audit
from dbguard_plugin.core.state import Snapshot, TradingState, describe
from dbguard_plugin.engines.lease import Lease, LeaseView, open_lease
from dbguard_plugin.engines.server import is_server
from dbguard_plugin.engines.server.backup import create_backup as server_backup
from dbguard_plugin.engines.sqlite.backup import (
    BackupSettings,
    NothingToBackUp,
    Progress,
    check_source,
    create_backup,
)
from dbguard_plugin.errors import ConfigError, DbGuardError, UnsafePathError, VetoedError
from dbguard_plugin.events import Operation, OrderEvent, OrderKind, SessionInfo, parse_kind
from dbguard_plugin.location import (
    DatabaseLocation,
    adopt_legacy_state_dir,
    hard_link_problem,
    locate,
)
from dbguard_plugin.operations.recovery import recover
from dbguard_plugin.operations.restore import GENERATION, last_replacement, read_generation
from dbguard_plugin.plugin.manager import load_plugins
from dbguard_plugin.settings.config import Config
from dbguard_plugin.status import HOSTNAME, HolderStatus
from dbguard_plugin.verdict import Reason, Verdict

log = logging.getLogger(__name__)

__all__ = ["Guard", "Reason", "Verdict"]


class Guard:
    """Guards one database: tracks this process's trading and answers operators.

    A host creates one Guard per database and calls :meth:`start_session`,
    :meth:`admit_order`, :meth:`order_event` and :meth:`end_session`. An operator (the CLI,
    a UI) calls :meth:`check` or runs an operation inside :meth:`operation`.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        db_url: str | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
    ) -> None:
        config = (config or Config()).with_db(db_url)
        if not config.db_url:
            raise ConfigError(
                f"{config.source}: no database: set dbguard.db_url in the config file "
                "or give --db URL (e.g. sqlite:////path/to/tradesv3.sqlite)"
            )
        self.config = config
        self.location: DatabaseLocation = locate(config.db_url, config.state_dir)
        if config.state_dir is None:
            adopt_legacy_state_dir(self.location)
        self.pm = plugin_manager or load_plugins()
        self.state = TradingState()
        self.lease: Lease = open_lease(self.location)
        self._publisher = self.lease.publisher("bot", self._bot_status)
        self._lease_lock = threading.Lock()
        self._hook = self.pm.hook
        self.catalog = Catalog(
            Path(config.backup_dir).expanduser().absolute()
            if config.backup_dir
            else self.location.state_dir / "backups",
            database=self.location,
        )
        #: Why new orders are paused (a failed required backup), or None.
        self.paused: str | None = None
        self._resume_when: Callable[[], bool] = self._backed_up
        self._last_backup = 0.0
        self._last_attempt = 0.0
        self._generation = read_generation(self.location.state_dir)
        # (inode, mtime, size) of generation.json when tick() last read it; () = never
        self._generation_stamp: tuple[int, ...] | None = ()
        # Set by a fault of the lease or the status file: tick() brings both up to date.
        self._resync_due = False
        # Why the dbguard directory cannot be used, found at start_session(), or None.
        self._unsafe_dir: str | None = None

    @classmethod
    def from_config(cls, path: str | Path | None = None, db_url: str | None = None,
                    profile: str | None = None) -> Guard:
        """The Guard for a bot config, with *profile* (default: the active one) applied."""
        from dbguard_plugin.settings.config import resolve

        return cls(resolve(path, db_url, profile))

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def audit_path(self) -> Path:
        if self.config.audit_log:
            return Path(self.config.audit_log).expanduser()
        return self.location.state_dir / "audit.jsonl"

    # -- host side: lifecycle ----------------------------------------------------------

    def start_session(
        self, session_id: str | None = None, *, host: str = "custom", dry_run: bool = False
    ) -> SessionInfo:
        """Tell dbguard a trading session starts; call before the first order."""
        now = time.time()
        session = SessionInfo(
            session_id
            or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{os.getpid()}",
            now,
            host,
            dry_run,
        )
        if not self.enabled:
            return session
        try:
            self._unsafe_dir = self._unsafe_state_dir()
            problem = self._unsafe_dir or self.database_problem()
            if problem is not None:
                # Trading on a database dbguard cannot guard, or on a fresh file where
                # its history used to be, is what the guard exists to prevent.
                self.pause_trading(problem, resume_when=_never)
            if self._unsafe_dir is not None:
                # Recovery, the lease and the session-start backup would all write
                # through the link: the session is only tracked, and orders stay paused.
                self.state.start_session(session)
                return session
            self._hook.dbguard_session_started(guard=self, session=session)
        except tracking.FAULTS as exc:
            # The built-in plugins contain their own faults; this is a plugin's.
            if self.state.session is None:
                self.state.start_session(session)
            self.report_fault("start_session", exc, "the session is tracked in this "
                              "process; tick() tries again to publish it")
        return session

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

    def refuse_unguardable(self, operation: Operation) -> None:
        """Raise VetoedError before *operation* reads anything through a name of a file
        that has several hard links: this name's catalog, WAL and lease are not the
        bot's, so no answer read through it could be trusted."""
        linked = hard_link_problem(self.location)
        if linked is not None:
            verdict = Verdict(operation, (Reason("hard-linked", linked, False),))
            raise VetoedError(verdict, verdict.summary())

    def database_problem(self) -> str | None:
        """Why this database cannot be traded on safely as configured, or None: a file
        with several hard links, or no file where the catalog holds its backups."""
        problem = hard_link_problem(self.location)
        path = self.location.sqlite_path
        if problem is None and path is not None and not path.exists():
            with contextlib.suppress(DbGuardError, OSError):
                newest = self.catalog.manifests()
                if newest:
                    problem = (
                        f"{path} does not exist, but {self.catalog.directory} holds "
                        f"{len(newest)} backups of it (the newest {newest[-1].id}): the "
                        "database was moved or deleted. Point the configuration (or the "
                        "active profile) at where it lives now, or restore it with "
                        f"'dbguard restore {newest[-1].id} --yes'"
                    )
        return problem

    def end_session(self) -> SessionInfo | None:
        """Tell dbguard the session ends; call after the host's final commit."""
        session = self.state.session
        if not self.enabled or session is None:
            return session
        if self._unsafe_dir is not None:  # nothing was started through the link
            self.state.end_session()
            return session
        try:
            self._hook.dbguard_session_ending(guard=self, session=session)
        except tracking.FAULTS as exc:
            # A plugin's fault may have stopped the hook before the tracking plugin ended
            # the session: end it here, and give back what it held.
            self.state.end_session()
            with contextlib.suppress(*tracking.FAULTS):
                self.sync_lease()
            self.lease.release_session()
            self.report_fault("end_session", exc, "the session ended and the lease is "
                              "released")
        return session

    def admit_order(self, timeout: float | None = None, *, symbol: str = "",
                    side: str = "") -> bool:
        """Ask to place a new order. False means maintenance: an operation holds the lease.

        Call just before submitting; a host that gets False skips that entry and tries
        again on a later loop. *timeout* (default ``maintenance_wait`` from the config)
        bounds how long to wait for the operation to finish. *symbol* and *side* name
        the order in the status (and in vetoes) until it has an id. Never raises: when dbguard
        cannot take the lease or publish the admission (a full disk, say) the answer is
        False, because an order the lease does not cover would let a replacement through.
        """
        if not self.enabled:
            return True
        wait = self.config.maintenance_wait if timeout is None else timeout
        try:
            return self._admit(wait, describe(symbol, side))
        except tracking.FAULTS as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.report_fault("admit_order", exc, "the new order was refused")
            signals.notify(signals.maintenance_refused, self,
                           holder=f"dbguard cannot record the admission ({error})")
            return False

    def _admit(self, wait: float, what: str) -> bool:
        if self.paused is not None and not self._resume():
            log.warning("dbguard: new order refused: %s", self.paused)
            signals.notify(signals.maintenance_refused, self, holder=self.paused)
            return False
        newly = self.state.admit(what)
        try:
            if self.sync_lease(wait):
                if what and not newly:  # the lease was held already: say what is coming
                    self.publish_status_soon()
                return True
        except BaseException:
            self.state.withdraw()
            with contextlib.suppress(*tracking.FAULTS):
                self.sync_lease()  # gives back a lease taken for this admission alone
            raise
        self.state.withdraw()
        self.sync_lease()
        holder = self._operation_holder()
        log.warning(
            "dbguard: new order refused, database maintenance in progress%s",
            f" ({holder})" if holder else "",
        )
        signals.notify(signals.maintenance_refused, self, holder=holder)
        return False

    def withdraw_admission(self) -> None:
        """Give back an admission whose order was not placed after all."""
        if self.enabled and self.state.withdraw():
            try:
                self.sync_lease()
            except tracking.FAULTS as exc:
                self.report_fault("withdraw_admission", exc, self.lease_outcome())

    def order_event(
        self,
        event: OrderEvent | str | int | None = None,
        kind: OrderKind | str | None = None,
        *,
        symbol: str = "",
        side: str = "",
        order_id: str | int | None = None,
    ) -> None:
        """Report an order event: ``order_event(OrderEvent(...))``,
        ``order_event(id, kind, symbol=..., side=...)`` or
        ``order_event(order_id=id, kind=kind)``.

        Never raises for a fault of the disk or of data: the tracker always follows the
        event, and an order that ends always gives back the lease, even when the status
        file cannot be written. A wrong call (no kind, an unknown kind) still raises."""
        if not self.config.enabled:
            return
        if event is None:
            if order_id is None:
                raise TypeError("order_event() needs an OrderEvent or an order id")
            event = order_id
        if not isinstance(event, OrderEvent):
            if kind is None:
                raise TypeError("order_event(order_id, kind): kind is required")
            order_kind = parse_kind(kind)
        caller = self._hook.dbguard_order_event
        impls = caller.get_hookimpls()
        builtin_only = len(impls) == 1 and impls[0].plugin is tracking
        try:  # costs nothing until something raises; the tracker handles its own faults
            if isinstance(event, OrderEvent):
                if builtin_only:
                    tracking.on_order(self, event.order_id, event.kind, event.symbol,
                                      event.side, event.timestamp, event)
                else:
                    caller(guard=self, event=event)
            elif builtin_only:
                tracking.on_order(self, str(event), order_kind, symbol, side, time.time())
            else:
                caller(guard=self, event=OrderEvent(str(event), order_kind, symbol, side))
        except tracking.FAULTS as exc:  # a plugin's: it may have stopped the hook early
            self.report_fault("order_event", exc, self.lease_outcome())

    def reconcile(self, open_orders: dict[str, tuple[str, str]]) -> None:
        """Make the tracker match the host's own list of open orders (id -> (symbol, side))."""
        if not self.enabled:
            return
        flipped = self.state.reconcile(open_orders)
        try:
            if flipped:
                self.sync_lease()
            else:
                self.publish_status_soon()
        except tracking.FAULTS as exc:
            self.report_fault("reconcile", exc, self.lease_outcome())

    def tick(self) -> None:
        """Call once per host loop: notices a replacement made by another process (and
        calls the host's ``dbguard_refresh``), and takes the interval backup when one is
        due and no order is in flight (``backup_interval``; off by default). After a
        fault it brings the lease and the status file up to date again. Never raises."""
        if not self.enabled:
            return
        try:
            if self._resync_due:
                self._resync()
            self._tick()
        except tracking.FAULTS as exc:
            self.report_fault("tick", exc, "the next tick() tries again", resync=False)

    def _tick(self) -> None:
        # A host calls this every loop: one stat, and the file is parsed only when it
        # changed. Replacements rewrite it by rename (write_atomic), so a new version has
        # a new inode; stat before reading, so a rename between the two is seen next time.
        try:
            st = os.stat(os.path.join(self.location.state_dir, GENERATION))
            stamp: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._generation_stamp:
            self._generation_stamp = stamp
            generation = read_generation(self.location.state_dir) if stamp else 0
            if generation != self._generation:
                self._generation = generation
                self._hook.dbguard_refresh(guard=self, operation=Operation.RESTORE)
        interval = self.config.backup_interval
        if (
            not self.enabled
            or not interval
            or self.state.session is None
            or self.state.busy
            or time.time() - self._last_backup < interval
            # a failing backup is retried every few minutes, not on every loop
            or time.time() - self._last_attempt < min(interval, 300.0)
        ):
            return
        self.automatic_backup("scheduled")

    # -- backups -----------------------------------------------------------------------

    def backup(
        self, reason: str = "manual", *, note: str = "", progress: Progress | None = None,
        keep: tuple[str, ...] = (),
        keep_damaged: bool = False,
    ) -> Manifest:
        """Take a verified hot backup now; prune the catalog after it (never the backups
        in *keep*). Raises on failure. With *keep_damaged* a database that fails its
        check is backed up anyway, as found, marked unverified (for a restore over it)."""
        server = self.location.sqlite_path is None and is_server(self.location)
        if not server:
            check_source(self.location)
        snapshot = self.state.snapshot()
        trading: dict[str, Any] = {
            "session_id": snapshot.session.session_id if snapshot.session else None,
            "orders_in_flight": [order.order_id for order in snapshot.orders],
        }
        with contextlib.suppress(DbGuardError, OSError):
            others = self.lease.probe().others()
            trading["other_processes"] = [
                {"pid": h.pid, "host": h.host, "role": h.role,
                 "orders_in_flight": [o.get("order_id") for o in h.orders]}
                for h in others
            ]
        signals.notify(
            signals.backup_started, self, reason=reason, backup_dir=self.catalog.directory
        )
        self._last_attempt = time.time()
        try:
            settings = BackupSettings(
                compression=self.config.compression,
                busy_timeout=self.config.busy_timeout,
                method=self.config.backup_method,
            )
            common: dict[str, Any] = {
                "settings": settings, "trading_state": trading, "progress": progress,
                "note": note, "profile": self.config.profile,
            }
            if server:
                manifest = server_backup(self.location, self.catalog, reason, **common)
            else:
                manifest = create_backup(self.location, self.catalog, reason,
                                         keep_damaged=keep_damaged, **common)
        except Exception as exc:
            signals.notify(signals.backup_failed, self, reason=reason, error=str(exc))
            raise
        self._last_backup = time.time()
        signals.notify(
            signals.backup_finished, self, manifest=manifest,
            path=self.catalog.data_path(manifest),
        )
        try:
            self.prune(keep=keep)
        except (DbGuardError, OSError) as exc:
            log.warning("dbguard: pruning %s after the backup failed: %s",
                        self.catalog.directory, exc)
        return manifest

    def automatic_backup(self, reason: str) -> bool:
        """A backup the host did not ask for: never raises. True when one was made or
        there was nothing to back up."""
        try:
            manifest = self.backup(reason)
        except NothingToBackUp as exc:
            log.info("dbguard: %s backup skipped: %s", reason, exc)
            return True
        except Exception as exc:
            log.error("dbguard: %s backup of %s failed: %s", reason, self.location.redacted,
                      exc)
            return False
        log.info("dbguard: %s backup %s verified (%d bytes)", reason, manifest.id,
                 manifest.size)
        return True

    def prune(self, dry_run: bool = False, keep: tuple[str, ...] = ()) -> list[Manifest]:
        """Apply the retention policy to the catalog; return the backups removed."""
        policy = Retention(self.config.keep_last, self.config.keep_daily,
                           self.config.keep_weekly)
        # the pins are read under the catalog lock, when prune holds it (see retention)
        return prune(self.catalog, policy, pinned=keep, dry_run=dry_run,
                     pins=self.pinned_backups)

    def pinned_backups(self) -> set[str]:
        """Backups an operation still needs: a running one's (its pins), an interrupted
        one's (its journal, and the undecided journals it carries), and the safety backup
        that ``dbguard rollback`` would restore. Read in that order (see retention.prune)."""
        pinned = self.catalog.pinned_ids()
        intent = journal.read(self.location.state_dir) if self.location.state_dir.is_dir() \
            else None
        for step in journal.chain(intent):
            pinned.update(i for i in (step.backup_id, step.safety_id) if i)
        last = last_replacement(self)
        if last is not None and last.get("safety_id"):
            pinned.add(str(last["safety_id"]))
        return pinned

    def recover(self) -> list[str]:
        """Finish or undo an interrupted operation; return what was done, in words."""
        return recover(self)

    def pause_trading(self, why: str, resume_when: Callable[[], bool] | None = None) -> None:
        """Refuse new orders until *resume_when* answers True at an admission; by default
        until a verified backup newer than the session exists."""
        self.paused = why
        self._resume_when = resume_when or self._backed_up
        log.error("dbguard: %s", why)
        signals.notify(signals.orders_paused, self, why=why, database=self.location.redacted)

    def _resume(self) -> bool:
        # Whatever paused orders last (a failed backup, say), a new backup must not
        # resume them while an interrupted operation awaits an operator's decision.
        if journal.awaits_decision(self.location.state_dir) or not self._resume_when():
            return False
        log.warning("dbguard: new orders resume: no longer true: %s", self.paused)
        self.paused = None
        return True

    def _backed_up(self) -> bool:
        session = self.state.session
        since = session.started_at if session is not None else 0.0
        try:
            newest = self.catalog.newest_verified()
            # a manifest with a wrong-typed field must keep the pause, not raise
            return newest is not None and newest.created_ts >= since
        except tracking.FAULTS:
            return False

    # -- lease bookkeeping (used by the built-in tracking plugin) ----------------------

    def sync_lease(self, timeout: float = 0.0) -> bool:
        """Make the shared lease follow the tracker: held exactly while busy.

        Returns False when the tracker is busy but the lease could not be taken.
        """
        with self._lease_lock:
            busy = self.state.busy
            if busy and not self.lease.holding_orders:
                if not self.lease.hold_orders(timeout):
                    return False
                self._publisher.publish_now()
            elif not busy and self.lease.holding_orders:
                try:
                    self._publish_or_withdraw()
                except BaseException:
                    # A file that still lists the ended orders would mislead a reader;
                    # without one, the session lock still shows the session.
                    with contextlib.suppress(OSError):
                        self._publisher.withdraw()
                    raise
                finally:
                    # Releasing is always safe: the lock is the truth, the file explains.
                    self.lease.release_orders()
            return True

    def report_fault(self, call: str, exc: BaseException, outcome: str, *,
                     resync: bool = True) -> None:
        """A host call met a fault of the disk or of data and did *outcome* instead of
        raising: log it and send ``host-fault``. With *resync*, tick() then brings the
        lease and the status file up to date."""
        if resync:
            self._resync_due = True
        error = f"{type(exc).__name__}: {exc}"
        log.error("dbguard: %s could not complete (%s); %s", call, error, outcome)
        signals.notify(signals.host_fault, self, call=call, error=error, outcome=outcome)

    def lease_outcome(self) -> str:
        """Where the tracker and the lease stand after a fault, in words."""
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

    def _resync(self) -> None:
        """After a fault: take or give back the lease as the tracker says, mark the
        session active, and rewrite the status file."""
        self.sync_lease()
        if self.state.session is not None:
            self.lease.hold_session()
        self.publish_status_now()
        self._resync_due = False
        log.warning("dbguard: the lease and the status file of %s are up to date again",
                    self.location.redacted)

    def publish_status_soon(self) -> None:
        self._publisher.publish_soon()

    def publish_status_now(self) -> None:
        with self._lease_lock:
            self._publish_or_withdraw()

    def _publish_or_withdraw(self) -> None:
        if self.state.busy or self.state.session is not None:
            self._publisher.publish_now()
        else:
            self._publisher.withdraw()

    def _bot_status(self) -> dict[str, Any]:
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

    # -- operator side -----------------------------------------------------------------

    def check(self, operation: Operation | str) -> Verdict:
        """Every reason *operation* may not run now. Sends ``operation-vetoed`` if any."""
        op = Operation.parse(operation)
        snapshot = self.state.snapshot()
        view = self.lease.probe()
        reasons = self._lease_reasons(snapshot, view)
        linked = hard_link_problem(self.location)
        if linked is not None:
            # Another name of this file has its own lease: what that lease would show
            # here cannot be seen, so nothing may replace the file through any name.
            reasons.insert(0, Reason("hard-linked", linked, False))
        warnings: list[str] = []
        sessions = self._sessions(snapshot, view)
        if sessions:
            text = "; ".join(sessions)
            if op in self.config.vetoed_by_session:
                reasons.append(Reason(
                    "session-active",
                    f"a trading session is active ({text}); {op.value} needs the bot "
                    f"stopped in the {self.config.environment} environment",
                    overridable=True,
                ))
            else:
                warnings.append(f"a trading session is active ({text})")
        vetoed = self._hook.dbguard_veto(guard=self, operation=op, state=snapshot)
        if vetoed:
            reasons.append(Reason("plugin", str(vetoed), overridable=True))
        verdict = Verdict(op, tuple(reasons), tuple(warnings))
        if reasons:
            signals.notify(
                signals.operation_vetoed, self, operation=op, verdict=verdict,
                reasons=[r.message for r in reasons],
            )
        return verdict

    def authorize(
        self, operation: Operation | str, *, force: bool = False, who: str | None = None
    ) -> Verdict:
        """Check *operation*; raise :class:`VetoedError` unless it is allowed or forced.

        ``force`` overrides an active session and plugin vetoes, and is written to the
        audit log. It never overrides orders in flight or a lease held by an operation.
        """
        verdict = self.check(operation)
        if verdict.allowed:
            return verdict
        if force and verdict.overridable:
            forced = dataclasses.replace(verdict, forced=True)
            who = who or audit.operator()
            audit.record_force(self.audit_path, forced, who, self.location.redacted)
            log.warning("dbguard: %s forced by %s over: %s", forced.operation.value, who,
                        "; ".join(r.message for r in forced.reasons))
            signals.notify(
                signals.operation_forced, self, operation=forced.operation, verdict=forced,
                reasons=[r.message for r in forced.reasons], who=who,
            )
            return forced
        hint = "" if verdict.overridable else "\n(force cannot override these)"
        raise VetoedError(verdict, verdict.summary() + hint)

    @contextlib.contextmanager
    def operation(
        self,
        operation: Operation | str,
        *,
        force: bool = False,
        who: str | None = None,
        timeout: float = 0.0,
    ) -> Iterator[Verdict]:
        """Hold the lease exclusive for *operation*, after the guard allowed it.

        While inside, no bot can admit a new order (maintenance mode) and no other
        operation can start. Raises :class:`VetoedError` with every reason otherwise.
        """
        op = Operation.parse(operation)
        if self.lease.holding_exclusive:
            raise VetoedError(Verdict(op, (Reason(
                "operation-in-progress",
                f"this process (pid {os.getpid()}) is already running an operation; "
                "finish it first", False, {"pid": os.getpid()}),)),
                f"{op.value}: vetoed: an operation is already running in this process")
        if not self.lease.take_exclusive(timeout):
            verdict = self.check(op)
            if not verdict.reasons:  # the holder left between the two looks
                verdict = Verdict(op, (Reason(
                    "lease-held", "another process held the lease; try again", False),))
            raise VetoedError(verdict, verdict.summary())
        publisher = self.lease.publisher(
            "operation",
            lambda: {
                "role": "operation", "pid": os.getpid(), "host": HOSTNAME,
                "operation": op.value, "since": time.time(),
                "database": self.location.redacted,
            },
        )
        try:
            publisher.publish_now()
            yield self.authorize(op, force=force, who=who)
        finally:
            publisher.withdraw()
            self.lease.release_exclusive()

    def status(self) -> dict[str, Any]:
        """Everything ``dbguard status`` shows, as plain data."""
        view = self.lease.probe()
        problem = self.database_problem()
        return {
            "database": self.location.redacted,
            "file": str(self.location.sqlite_path) if self.location.sqlite_path else None,
            "warnings": [problem] if problem is not None else [],
            "environment": self.config.environment,
            "enabled": self.enabled,
            "state_dir": str(self.location.state_dir),
            "lease": {
                "orders": "free" if view.orders_free else "held",
                "session": "free" if view.session_free else "held",
                "holders": [_holder_dict(h) for h in view.holders],
            },
            "this_process": self.state.snapshot().as_dict(),
            "paused": self.paused,
            "backups": str(self.catalog.directory),
            "plugins": [name for name, _ in self.pm.list_name_plugin()],
        }

    def close(self) -> None:
        """Give back everything this process holds (the host is shutting down). Never
        raises: the locks are given back even when the status file cannot be removed."""
        self._publisher.close()
        fault: Exception | None = None
        with self._lease_lock:
            try:
                self._publisher.withdraw()
            except tracking.FAULTS as exc:
                fault = exc
            finally:
                self.lease.close()
        if fault is not None:  # reported outside the lock: a receiver may call the guard
            self.report_fault("close", fault, "the lease is released; the status file could "
                              "not be removed (the lock decides, the file only explains)",
                              resync=False)

    # -- reasons -------------------------------------------------------------------------

    def _lease_reasons(self, snapshot: Snapshot, view: LeaseView) -> list[Reason]:
        reasons: list[Reason] = []
        pid = os.getpid()
        if snapshot.orders:
            reasons.append(_orders_reason(
                f"pid {pid} (this process)", pid, HOSTNAME,
                [order.describe() for order in snapshot.orders],
            ))
        elif snapshot.admissions:
            reasons.append(_placing_reason(f"pid {pid} (this process)", pid, HOSTNAME,
                                           snapshot.admissions, list(snapshot.pending)))
        if view.orders_free or self.lease.holding_exclusive:
            return reasons
        others = view.others()
        explained = False
        for holder in others:
            if holder.role == "operation":
                explained = True
                reasons.append(Reason(
                    "operation-in-progress",
                    f"{holder.operation} in progress by {holder.where()}; wait for it to "
                    "finish", False, {"pid": holder.pid, "host": holder.host,
                                      "operation": holder.operation},
                ))
            elif holder.orders:
                explained = True
                reasons.append(_orders_reason(
                    holder.where(), holder.pid, holder.host,
                    [_describe_order(order) for order in holder.orders],
                ))
            elif isinstance(count := holder.data.get("admissions"), int) and count > 0:
                explained = True
                pending = holder.data.get("pending")
                reasons.append(_placing_reason(
                    holder.where(), holder.pid, holder.host, count,
                    pending if isinstance(pending, list) else [],
                ))
        if not explained and not self.lease.holding_orders:
            bots = ", ".join(h.where() for h in others if h.role == "bot") or "unknown"
            reasons.append(Reason(
                "lease-held",
                f"the database lease is held by another process ({bots}) that has not "
                "published its orders yet; try again in a moment", False,
            ))
        return reasons

    def _sessions(self, snapshot: Snapshot, view: LeaseView) -> list[str]:
        found = []
        if snapshot.session is not None:
            found.append(f"session {snapshot.session.session_id} in pid {os.getpid()} "
                         "(this process)")
        if not view.session_free:
            for holder in view.others():
                if holder.session:
                    found.append(f"session {holder.session.get('session_id')} in "
                                 f"{holder.where()}")
            if len(found) == (1 if snapshot.session is not None else 0) and (
                self.state.session is None
            ):
                found.append("a session in a process that has not published its status")
        return found

    def _operation_holder(self) -> str | None:
        for holder in self.lease.probe().others():
            if holder.role == "operation":
                return f"{holder.operation} by {holder.where()}"
        return None


def _never() -> bool:
    """A pause only a restart (after an operator fixed the cause) ends."""
    return False


def _describe_order(order: dict[str, Any]) -> str:
    what = " ".join(str(order.get(k) or "") for k in ("symbol", "side")).strip()
    oid = str(order.get("order_id"))
    return f"{oid} ({what}, {order.get('state')})" if what else oid


def _placing_reason(where: str, pid: int, host: str, count: int,
                    pending: list[str]) -> Reason:
    """An admitted order the host has not submitted yet (no id): named by pair and side."""
    what = f": {', '.join(str(p) for p in pending)}" if pending else ""
    noun = "an order" if count == 1 else f"{count} orders"
    return Reason("orders-in-flight", f"{where} is about to place {noun}{what}", False,
                  {"pid": pid, "host": host, "placing": pending})


def _orders_reason(where: str, pid: int, host: str, orders: list[str]) -> Reason:
    noun = "order" if len(orders) == 1 else "orders"
    return Reason(
        "orders-in-flight",
        f"{len(orders)} {noun} in flight in {where}: {', '.join(orders)}",
        False,
        {"pid": pid, "host": host, "orders": orders},
    )


def _holder_dict(holder: HolderStatus) -> dict[str, Any]:
    return {
        "role": holder.role,
        "pid": holder.pid,
        "host": holder.host,
        "orders_in_flight": holder.orders,
        "session": holder.session,
        "operation": holder.operation,
    }
