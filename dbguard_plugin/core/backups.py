"""The guard's backups: made now (by the operator or at session boundaries), pruned by
the retention policy, never pruning what an operation still needs."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import Catalog, default_directory, journal
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core import generation
from dbguard_plugin.core.trading import Trading
from dbguard_plugin.engines import create_backup
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.settings.config import Config

if TYPE_CHECKING:
    from dbguard_plugin.engines.backup import Progress

log = logging.getLogger("dbguard_plugin.core.guard")


def catalog_for(config: Config, location: DatabaseLocation) -> Catalog:
    """The catalog of *location*'s backups: ``backup_dir``, or the dbguard directory's."""
    directory = (Path(config.backup_dir).expanduser().absolute() if config.backup_dir
                 else default_directory(location.state_dir))
    return Catalog(directory, database=location)


class Backups:
    """Backups of one guarded database. *sender* (the guard) names every signal."""

    def __init__(self, sender: object, config: Config, location: DatabaseLocation,
                 catalog: Catalog, trading: Trading) -> None:
        self.sender = sender
        self.config = config
        self.location = location
        self.catalog = catalog
        self.trading = trading
        self.last_backup = 0.0
        self.last_attempt = 0.0

    def create(self, reason: str, *, note: str, progress: Progress | None,
               keep: tuple[str, ...], keep_damaged: bool) -> Manifest:
        signals.notify(signals.backup_started, self.sender, reason=reason,
                       backup_dir=self.catalog.directory)
        self.last_attempt = time.time()
        # why here: the backup and retention modules cost every `dbguard status` and
        # `check` (which make none) part of their start; they load with the first backup
        from dbguard_plugin.engines.backup import BackupSettings

        settings = BackupSettings(compression=self.config.compression,
                                  busy_timeout=self.config.busy_timeout,
                                  method=self.config.backup_method,
                                  storage=self.config.storage)
        try:
            manifest = create_backup(
                self.location, self.catalog, reason, settings=settings,
                trading_state=self._trading_state(), progress=progress, note=note,
                profile=self.config.profile, keep_damaged=keep_damaged)
        except Exception as exc:
            signals.notify(signals.backup_failed, self.sender, reason=reason, error=str(exc))
            raise
        self.last_backup = time.time()
        signals.notify(signals.backup_finished, self.sender, manifest=manifest,
                       path=self.catalog.location_of(manifest))
        try:
            self.prune(keep=keep)
        except (DbGuardError, OSError) as exc:
            log.warning("dbguard: pruning %s after the backup failed: %s",
                        self.catalog.directory, exc)
        return manifest

    def _trading_state(self) -> dict[str, Any]:
        """Who traded when the backup was taken, for the manifest."""
        snapshot = self.trading.state.snapshot()
        trading: dict[str, Any] = {
            "session_id": snapshot.session.session_id if snapshot.session else None,
            "orders_in_flight": [order.order_id for order in snapshot.orders],
        }
        with contextlib.suppress(DbGuardError, OSError):
            others = self.trading.lease.probe().others()
            trading["other_processes"] = [
                {"pid": h.pid, "host": h.host, "role": h.role,
                 "orders_in_flight": [o.get("order_id") for o in h.orders]}
                for h in others
            ]
        return trading

    def automatic(self, reason: str, backup: Any) -> bool:
        """A backup the host did not ask for (through *backup*, the guard's, so that a
        subclass's is used): never raises. True when made or nothing to back up."""
        # why here: as in create()
        from dbguard_plugin.engines.backup import NothingToBackUp

        try:
            manifest = backup(reason)
        except NothingToBackUp as exc:
            log.info("dbguard: %s backup skipped: %s", reason, exc)
            return True
        except Exception as exc:
            log.error("dbguard: %s backup of %s failed: %s", reason,
                      self.location.redacted, exc)
            return False
        log.info("dbguard: %s backup %s verified (%d bytes)", reason, manifest.id,
                 manifest.size)
        return True

    def due(self) -> bool:
        """Whether the interval backup is due now (``backup_interval``)."""
        interval = self.config.backup_interval
        now = time.time()
        return bool(
            interval
            and self.trading.state.session is not None
            and not self.trading.state.busy
            and now - self.last_backup >= interval
            # a failing backup is retried every few minutes, not on every loop
            and now - self.last_attempt >= min(interval, 300.0)
        )

    def prune(self, dry_run: bool = False, keep: tuple[str, ...] = ()) -> list[Manifest]:
        # why here: as in create()
        from dbguard_plugin.catalog.retention import Retention, prune

        policy = Retention(self.config.keep_last, self.config.keep_daily,
                           self.config.keep_weekly, self.config.keep_monthly,
                           self.config.max_age_days)
        # the pins are read under the catalog lock, when prune holds it (see retention)
        return prune(self.catalog, policy, pinned=keep, dry_run=dry_run, pins=self.pinned)

    def pinned(self) -> set[str]:
        """Backups an operation still needs: a running one's (its pins), an interrupted
        one's (its journal, and the undecided journals it carries), and the safety backup
        that ``dbguard rollback`` would restore. Read in that order (see retention.prune)."""
        state_dir = self.location.state_dir
        pinned = self.catalog.pinned_ids()
        intent = journal.read(state_dir) if state_dir.is_dir() else None
        for step in journal.chain(intent):
            pinned.update(i for i in (step.backup_id, step.safety_id) if i)
        last = generation.last_replacement(state_dir)
        if last is not None and last.get("safety_id"):
            pinned.add(str(last["safety_id"]))
        return pinned
