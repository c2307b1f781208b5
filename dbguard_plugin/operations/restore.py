"""The replacement engine: restore and rollback, atomic, verified, crash-safe.

Every replacement goes the same way: the guard allows it and the lease is held
exclusive; the backup is verified against its manifest before anything is touched; a
safety backup of the live database is taken and verified; the intent is journaled; the
snapshot is written INTO the live database with SQLite's backup API, which is one
journaled transaction (safe with the bot's connections open, no rename of a file that
may be open); the result is checked; on any failure the safety backup goes back the
same way. docs/restore.rst, "Why the snapshot is written into the live database", says why.

What a restore needs (the backup, and its safety backup from the moment its id exists)
is pinned against prune in every process from its first step to its last. A journal
that recovery could not decide is carried in the restore's own (``previous``): the
restore settles it when it succeeds, and it is pending again when the restore is undone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core import audit
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines import preview_restore, verified_copy
from dbguard_plugin.engines.preview import Preview
from dbguard_plugin.engines.sqlite.backup import (
    NothingToBackUp,
    Progress,
    sqlite_uri,
)
from dbguard_plugin.engines.sqlite.preview import compute
from dbguard_plugin.errors import ConfigError, VerificationError, VetoedError
from dbguard_plugin.events import Operation
from dbguard_plugin.operations.recovery import recover
from dbguard_plugin.operations.replacement import (
    Outcome,
    RestoreError,
    finish,
    last_replacement,
    live_path,
    replaced,
)
from dbguard_plugin.operations.sqlite_write import (
    LiveDatabaseBusy,
    post_check,
    put_back,
    schema_version,
    write_into,
)
from dbguard_plugin.verdict import Reason, Verdict

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

log = logging.getLogger(__name__)


def preview(guard: Guard, manifest: Manifest, *, rows_lost: bool = True) -> Preview:
    """What restoring *manifest* would change, read-only. The backup is checked first
    (sha256 and quick_check): a damaged file is never opened as a database."""
    guard.refuse_unguardable(Operation.RESTORE)
    return preview_restore(guard.location, guard.catalog, manifest, guard.config.open_orders,
                           guard.config.open_trades, rows_lost=rows_lost)


def restore(
    guard: Guard,
    backup_id: str,
    *,
    force: bool = False,
    who: str | None = None,
    progress: Progress | None = None,
    operation: str = "restore",
    from_profile: str | None = None,
    from_environment: str = "",
) -> Outcome:
    """Write backup *backup_id* into the live database; see the module docstring.

    A backup taken in another profile needs *from_profile* naming it (and its
    *from_environment*); see :func:`check_profile`. From the first step to the last, the
    backup and (from the moment its id exists) the safety backup are pinned: a prune in
    any process, a cron job's, cannot take either.
    """
    with guard.catalog.pinning(operation):
        manifest = guard.catalog.pin(backup_id)
        check_profile(guard, manifest, from_profile, from_environment, force=force, who=who)
        if guard.location.sqlite_path is None:  # a server database: the servers' own engine
            # why here: the server restore loads the server engine (SQLAlchemy, a driver)
            from dbguard_plugin.operations.server_restore import restore_server

            return restore_server(guard, backup_id, force=force, who=who, operation=operation)
        if from_profile is None and not force and not guard.catalog.belongs_here(manifest.source):
            # A file copied in from another bot's catalog: its checksum is fine, it is
            # simply not this database.
            raise RestoreError(
                f"backup {manifest.id} in {guard.catalog.directory} was taken of "
                f"{manifest.source}, not of {guard.location.redacted}; nothing was changed. "
                "Restore it anyway with --force, or take it from its own profile with "
                "--from-profile NAME"
            )
        return _restore_sqlite(guard, manifest, force=force, who=who, progress=progress,
                               operation=operation)


def _restore_sqlite(guard: Guard, manifest: Manifest, *, force: bool, who: str | None,
                    progress: Progress | None, operation: str) -> Outcome:
    clock = time.monotonic()
    live = live_path(guard)
    with guard.operation(Operation.RESTORE, force=force, who=who):
        reach("restore:locked")
        previous = _settle(guard)
        # one read of the stored file: hashed as it is decompressed into plain, which
        # is checked, compared and then written: the very bytes that were verified
        with verified_copy(guard.catalog, manifest, guard.config.restore_check) as plain:
            reach("restore:verified")
            _check_compatible(live, manifest)
            _check_space(live, manifest)
            reach("restore:space-checked")
            changes = compute(live, plain, guard.config.open_orders,
                              guard.config.open_trades, rows_lost=False)
            vetoable = _not_reopened_by_last(guard, manifest, changes) \
                if operation == "rollback" else changes
            if vetoable.drops_open_positions:
                _allow_dropping(guard, manifest, vetoable, force, who, operation)
            safety = _safety_backup(guard, manifest, live)
            reach("restore:safety-done")
            intent = journal.Intent(
                operation=operation, step="restoring", backup_id=manifest.id,
                safety_id=safety.id if safety else "", database=guard.location.redacted,
                schema_version=schema_version(live), backup_sha256=manifest.sha256,
                safety_sha256=safety.sha256 if safety else "",
                previous=asdict(previous) if previous is not None else None,
            )
            journal.write(guard.location.state_dir, intent)
            reach("restore:journal-written")
            signals.notify(signals.restore_started, guard, backup_id=manifest.id,
                           operation=operation)
            _write(guard, intent, live, plain, manifest, progress)
        finish(guard, intent, reopened=_reopened(changes))
        replaced(guard, Operation.RESTORE, manifest.id, intent.safety_id, operation)  # lease held
    resolved = previous.operation if previous is not None else ""
    return Outcome(operation, manifest.id, intent.safety_id, guard.location.redacted,
                   round(time.monotonic() - clock, 3), changes.as_dict(), resolved)


def _settle(guard: Guard) -> journal.Intent | None:
    """With the lease ours, settle a journal this command's recovery had to leave (the
    lease was busy then). Returns the journal recovery could not decide, which this
    restore resolves when it succeeds (an operator's choice), or None."""
    state_dir = guard.location.state_dir
    if not journal.path_in(state_dir).exists():
        return None
    recover(guard)
    pending = journal.read(state_dir)
    if pending is not None and not pending.undecided:
        raise RestoreError(
            f"the interrupted {pending.operation} journaled in {state_dir} could not be "
            "finished or undone yet (see the messages above); nothing was changed"
        )
    return pending


def _safety_backup(guard: Guard, manifest: Manifest, live: Path) -> Manifest | None:
    """The pre-restore backup of the live database (pinned from its allocation, see
    restore()); None when there is no live database yet: nothing to put back."""
    try:
        # keep=: the prune after the safety backup must not take the one restored
        return guard.backup("pre-restore", keep=(manifest.id,))
    except NothingToBackUp:
        return None
    except VerificationError as exc:
        # The live database itself is damaged: replacing it is the point of this
        # restore. Keep it as found (unverified) so nothing is lost, and go on.
        log.warning("%s: the live database fails its check (%s); keeping it as "
                    "found in an unverified safety backup", live, exc)
        return guard.backup("pre-restore", keep=(manifest.id,), keep_damaged=True)


def _write(guard: Guard, intent: journal.Intent, live: Path, plain: Path,
           manifest: Manifest, progress: Progress | None) -> None:
    """The copy and its check; on failure the safety backup goes back, and RestoreError
    says whether it did."""
    try:
        counts = write_into(live, plain, guard.config.busy_timeout, progress)
        reach("restore:copied")
        # quick_check: the pages came from a backup verified moments ago; the
        # schema and row counts below catch a copy that went wrong
        post_check(live, manifest, "quick_check", counts)
        reach("restore:checked")
    except LiveDatabaseBusy as exc:
        # The copy never committed: there is nothing to put back.
        journal.undone(guard.location.state_dir, intent)
        signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                       error=str(exc), rolled_back=False)
        raise RestoreError(f"{intent.operation} of {intent.backup_id} failed: {exc}; the "
                           "database is exactly as it was") from None
    except Exception as exc:
        what = f"{intent.operation} of {intent.backup_id}"
        try:
            undone = _undo(guard, intent, live)
        except Exception as undo_exc:
            # e.g. the disk that filled during the copy is still full: the journal
            # stays, and the next dbguard command finishes the undo.
            signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                           error=str(exc), rolled_back=False)
            raise RestoreError(
                f"{what} into {live} failed ({exc}), and putting safety backup "
                f"{intent.safety_id} back failed too ({undo_exc}); the operation journal "
                "is kept: fix the cause (free disk space, permissions), then run any "
                "dbguard command (e.g. 'dbguard status') and it finishes putting the "
                "database back"
            ) from None
        signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                       error=str(exc), rolled_back=undone)
        state = (f"the database was put back from safety backup {intent.safety_id}"
                 if undone else "there was no live database to put back")
        raise RestoreError(f"{what} failed ({exc}); {state}") from None


def rollback(guard: Guard, *, force: bool = False, who: str | None = None,
             progress: Progress | None = None) -> Outcome:
    """Undo the last replacement by restoring its safety backup, through the same engine."""
    last = last_replacement(guard)
    if last is None or not last.get("safety_id"):
        raise RestoreError(
            f"nothing to roll back for {guard.location.redacted}: no replacement with a "
            "safety backup is recorded"
        )
    return restore(guard, str(last["safety_id"]), force=force, who=who, progress=progress,
                   operation="rollback")


def _undo(guard: Guard, intent: journal.Intent, live: Path) -> bool:
    """Put the safety backup back, the same way. False when there is none."""
    if not intent.safety_id:
        journal.undone(guard.location.state_dir, intent)
        return False
    undo = intent.at("rolling-back")
    undo = journal.Intent(**{**asdict(undo), "schema_version": schema_version(live)})
    journal.write(guard.location.state_dir, undo)
    reach("restore:rolling-back")
    put_back(guard.catalog, guard.catalog.get(intent.safety_id), live,
             guard.config.busy_timeout)
    journal.undone(guard.location.state_dir, intent)
    return True


def check_profile(guard: Guard, manifest: Manifest, from_profile: str | None,
                  from_environment: str, *, force: bool = False, who: str | None = None) -> None:
    """Refuse a backup taken in another profile unless *from_profile* names that profile;
    a development or testing backup into a production profile needs *force* as well."""
    reason = profile_reason(guard, manifest, from_profile, from_environment)
    if reason is None:
        return
    verdict = Verdict(Operation.RESTORE, (reason,))
    if not force:
        raise VetoedError(verdict, f"restore: vetoed\n  - {reason.message}; nothing was changed")
    forced = dataclasses.replace(verdict, forced=True)
    audit.record_force(guard.audit_path, forced, who or audit.operator(), guard.location.redacted)


def profile_reason(guard: Guard, manifest: Manifest, from_profile: str | None,
                   from_environment: str) -> Reason | None:
    """The veto reason (overridable) for restoring a backup of another profile, if any;
    raises ConfigError when *from_profile* does not name the backup's profile."""
    mine, theirs = guard.config.profile, manifest.profile
    if not mine or not theirs or mine == theirs:
        return None
    into_production = guard.config.environment == "production" and \
        from_environment != "production"
    if from_profile != theirs:
        also = " and --force" if into_production else ""
        raise ConfigError(
            f"backup {manifest.id} was taken in profile {theirs}, not in {mine}; nothing "
            f"was changed. Restoring it here needs --from-profile {theirs}{also}"
        )
    if not into_production:
        return None
    return Reason(
        "cross-profile",
        f"backup {manifest.id} is from the {from_environment or 'unknown'} profile {theirs}; "
        f"restoring it into the production profile {mine} needs --force", True,
        {"from_profile": theirs, "profile": mine},
    )


def drop_reasons(changes: Preview) -> tuple[Reason, ...]:
    """The veto reasons for a restore that forgets open orders or trades."""
    return tuple(Reason("drops-open-positions", w, True) for w in changes.losses())


def _check_compatible(live: Path, manifest: Manifest) -> None:
    if not live.exists():
        return
    conn = sqlite3.connect(sqlite_uri(live, "rw"), uri=True, timeout=30)  # a hot journal
    try:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    if mode == "wal" and manifest.page_size and page_size != manifest.page_size:
        raise RestoreError(
            f"backup {manifest.id} has {manifest.page_size}-byte pages and {live} has "
            f"{page_size}-byte pages in WAL mode, which SQLite cannot write in place; nothing "
            f"was changed. Stop the bot, run: sqlite3 '{live}' 'PRAGMA journal_mode=DELETE', "
            "then restore again"
        )


def _check_space(live: Path, manifest: Manifest) -> None:
    free = shutil.disk_usage(live.parent if live.parent.exists() else Path(os.sep)).free
    need = manifest.raw_size * 2 + (16 << 20)  # the WAL or rollback journal, plus slack
    if free < need:
        raise RestoreError(
            f"{live.parent}: {free / 2**20:,.0f} MiB free, a restore of {manifest.id} needs "
            f"about {need / 2**20:,.0f} MiB; nothing was changed: free space first"
        )


def _reopened(changes: Preview) -> dict[str, list[str]]:
    return {"orders": list(changes.orders_resurrected),
            "trades": list(changes.trades_resurrected)}


def _not_reopened_by_last(guard: Guard, manifest: Manifest, changes: Preview) -> Preview:
    """A rollback's *changes* without the positions the replacement it undoes opened
    again: closing those puts back the state before the operator's own restore (the
    safety backup is that state), so it needs no --force. Positions opened since, by
    the bot, still count. Nothing is exempt when the record is not of this safety
    backup or predates ``reopened`` (a restore that recovery finished)."""
    last = last_replacement(guard) or {}
    reopened = last.get("reopened")
    if last.get("safety_id") != manifest.id or not isinstance(reopened, dict):
        return changes
    orders = {str(i) for i in reopened.get("orders", ())}
    trades = {str(i) for i in reopened.get("trades", ())}
    return dataclasses.replace(
        changes,
        open_orders_lost=[i for i in changes.open_orders_lost if i not in orders],
        open_trades_lost=[i for i in changes.open_trades_lost if i not in trades],
    )


def _allow_dropping(guard: Guard, manifest: Manifest, changes: Preview, force: bool,
                    who: str | None, operation: str = "restore") -> None:
    reasons = drop_reasons(changes)
    verdict = Verdict(Operation.RESTORE, reasons)
    if not force:
        if operation == "rollback":
            raise VetoedError(verdict, f"rollback to {manifest.id} would drop open positions "
                              "opened since the replacement it undoes; nothing was changed:\n"
                              + "\n".join(f"  - {r.message}" for r in reasons)
                              + "\nuse --force to roll back anyway")
        raise VetoedError(verdict, f"restoring {manifest.id} would drop open positions; "
                          "nothing was changed:\n" + "\n".join(f"  - {r.message}"
                                                               for r in reasons)
                          + "\nuse --force to restore anyway")
    forced = Verdict(Operation.RESTORE, reasons, forced=True)
    audit.record_force(guard.audit_path, forced, who or audit.operator(), guard.location.redacted)

