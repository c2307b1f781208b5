"""Restores of server databases through the same engine steps as SQLite's.

Guard (the lease exclusive: no bot has orders in flight, none can start one), verify
the backup (its sha256, or for a backup in the repository every chunk as it is
reassembled into a scratch copy, then the server tool's own look at the archive, which
is the file the replacement then loads), safety backup, the
operation journal, the atomic replacement (one transaction on PostgreSQL, one RENAME
TABLE on MariaDB), a post-check (row counts and schema fingerprint against the
manifest), the safety backup put back the same way on any failure, the record
(:func:`dbguard_plugin.operations.replacement.finish`: last replacement, generation) and the host
refresh.

Two things make a crash at any instant recoverable:

- The replacement cannot outlive the lease. On PostgreSQL the lease is lent to the
  restore transaction itself, which holds it until it commits or aborts; on MariaDB the
  RENAME runs on the lease's own connection. A killed dbguard's tools die with it
  (Linux), and what is already on the server either finishes while still holding the
  lease, or never commits: no bot is admitted while a replacement can still commit.
- The replacement commits a marker with the data: a fresh token, journaled before the
  replacement starts, that the same transaction (PostgreSQL: a row of
  ``dbguard_restores``) or the same RENAME (MariaDB: a ``dbguard_restores`` table moved
  in) puts on the server. :func:`recover_server` reads it: present, the restore
  committed and is recorded; absent, it never did and never will.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from typing import TYPE_CHECKING

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines import verified_archive
from dbguard_plugin.engines.server.credentials import scrub
from dbguard_plugin.engines.server.dialect import Dialect, OutcomeUnknown, compare
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.engines.server.lease import ServerLease
from dbguard_plugin.engines.server.verify import Archive, opened_archive
from dbguard_plugin.engines.sqlite.backup import NothingToBackUp
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError
from dbguard_plugin.events import Operation
from dbguard_plugin.operations.replacement import Outcome, RestoreError, finish, replaced

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

log = logging.getLogger(__name__)

#: said when this process cannot tell whether a replacement committed
_KEPT = ("the operation journal is kept: the next dbguard command (e.g. 'dbguard "
         "status') reads the restore's commit marker on the server and finishes or "
         "clears it")


def new_marker() -> str:
    return secrets.token_hex(8)


def restore_server(guard: Guard, backup_id: str, *, force: bool = False,
                   who: str | None = None, operation: str = "restore") -> Outcome:
    clock = time.monotonic()
    dialect = dialect_for(guard.location)
    manifest = guard.catalog.get(backup_id)
    if manifest.backend != dialect.params.kind:
        raise ConfigError(f"backup {manifest.id} is a {manifest.backend} backup; "
                          f"{guard.location.redacted} is a {dialect.params.kind} database")
    with guard.operation(Operation.RESTORE, force=force, who=who):
        reach("server-restore:locked")
        _settle(guard)
        # one read of the backup: the tool loads the very archive that was verified (a
        # repository backup's reassembled copy, kept until the replacement is done)
        with verified_archive(guard.catalog, manifest) as archive:
            dialect.cleanup()
            safety_id = _safety_backup(guard, manifest)
            reach("server-restore:safety-done")
            intent = journal.Intent(operation=operation, step="restoring",
                                    backup_id=manifest.id, safety_id=safety_id,
                                    database=guard.location.redacted, marker=new_marker())
            journal.write(guard.location.state_dir, intent)
            reach("server-restore:journal-written")
            signals.notify(signals.restore_started, guard, backup_id=manifest.id,
                           operation=operation)
            _replace(guard, dialect, archive, intent)
        reach("server-restore:committed")
        _check_or_put_back(guard, dialect, manifest, intent)
        reach("server-restore:checked")
        finish(guard, intent)
        dialect.forget(intent.marker)
        replaced(guard, Operation.RESTORE, manifest.id, safety_id, operation)
    return Outcome(operation, manifest.id, safety_id, guard.location.redacted,
                   round(time.monotonic() - clock, 3), None)


def _lease(guard: Guard) -> ServerLease:
    lease = guard.lease
    if not isinstance(lease, ServerLease):  # a server database always has one
        raise ConfigError(f"{guard.location.redacted}: no server lease")
    return lease


def _settle(guard: Guard) -> None:
    """With the lease ours, settle an interrupted server restore this command's recovery
    had to leave (the lease was busy then): a new journal must not take the place of
    one whose marker is still unread."""
    pending = journal.read(guard.location.state_dir)
    if pending is None or not pending.marker:
        return  # none, or not a server restore's: journal.write judges it
    said = recover_server(guard, pending)
    log.warning("dbguard: %s", said)
    if journal.read(guard.location.state_dir) is not None:
        raise DbGuardError(f"{said}; nothing was changed")


def _safety_backup(guard: Guard, manifest: Manifest) -> str:
    try:
        return guard.backup("pre-restore", keep=(manifest.id,)).id
    except NothingToBackUp:
        return ""


def _replace(guard: Guard, dialect: Dialect, archive: Archive,
             intent: journal.Intent) -> None:
    """The replacement with the verified *archive*: returns once it committed;
    RestoreError when it did not, or when that is not known (the journal then stays for
    recovery)."""
    path, manifest = archive
    what = f"{intent.operation} of {manifest.id}"
    try:
        dialect.restore_archive(path, manifest, guard.config.busy_timeout, _lease(guard),
                                intent.marker)
    except OutcomeUnknown as exc:
        error = scrub(str(exc), dialect.params)
        signals.notify(signals.restore_failed, guard, backup_id=manifest.id,
                       error=error, rolled_back=False)
        raise RestoreError(f"{what}: {error}, so whether it committed is not known yet; "
                           f"{_KEPT}") from None
    except Exception as exc:
        error = scrub(str(exc), dialect.params)
        journal.clear(guard.location.state_dir)
        dialect.forget(intent.marker)
        signals.notify(signals.restore_failed, guard, backup_id=manifest.id,
                       error=error, rolled_back=False)
        raise RestoreError(f"{what} failed ({error}); nothing was changed") from None


def _check_or_put_back(guard: Guard, dialect: Dialect, manifest: Manifest,
                       intent: journal.Intent) -> None:
    try:
        _check(guard, dialect, manifest)
    except Exception as exc:
        undone, state = _put_back(guard, dialect, intent)
        error = scrub(str(exc), dialect.params)
        signals.notify(signals.restore_failed, guard, backup_id=manifest.id,
                       error=error, rolled_back=undone)
        raise RestoreError(f"{intent.operation} of {manifest.id} failed its check "
                           f"({error}); {scrub(state, dialect.params)}") from None


def _check(guard: Guard, dialect: Dialect, manifest: Manifest) -> None:
    """The live database must now hold exactly the backup: row counts and schema."""
    problems = compare(manifest, dialect.live_facts(), guard.location.redacted)
    if problems:
        raise VerificationError("; ".join(problems))


def _put_back(guard: Guard, dialect: Dialect, intent: journal.Intent) -> tuple[bool, str]:
    """Restore the safety backup the same way, journaled with its own marker;
    (done, what the database holds now)."""
    state_dir = guard.location.state_dir
    safety_id = intent.safety_id
    cannot = (f"the database could not be put back: restore the safety backup "
              f"{safety_id or '(none)'} with 'dbguard restore'")
    if not safety_id:
        journal.clear(state_dir)
        dialect.forget(intent.marker)
        return False, cannot
    undo = dataclasses.replace(intent, step="rolling-back", marker=new_marker())
    journal.write(state_dir, undo)
    reach("server-restore:rolling-back")
    try:
        safety = guard.catalog.get(safety_id)
        # a repository backup is reassembled, every chunk checked: a bad one fails here,
        # before anything is replaced
        with opened_archive(guard.catalog, safety) as (path, plain):
            dialect.restore_archive(path, plain, guard.config.busy_timeout, _lease(guard),
                                    undo.marker)
    except OutcomeUnknown as again:
        return False, f"putting safety backup {safety_id} back was interrupted ({again}); {_KEPT}"
    except Exception as again:  # it did not commit: the checked-and-failed backup stays
        _close(guard, dialect, intent, undo)
        return False, f"putting safety backup {safety_id} back failed too ({again}); {cannot}"
    _close(guard, dialect, intent, undo)
    try:
        _check(guard, dialect, safety)
    except Exception as again:
        return False, (f"safety backup {safety_id} was put back, but fails its check too "
                       f"({again})")
    return True, f"the database was put back from safety backup {safety_id}"


def _close(guard: Guard, dialect: Dialect, *intents: journal.Intent) -> None:
    journal.clear(guard.location.state_dir)
    for intent in intents:
        dialect.forget(intent.marker)


# -- recovery ------------------------------------------------------------------------


def recover_server(guard: Guard, intent: journal.Intent) -> str:
    """Settle an interrupted server restore from its commit marker; one sentence for the
    operator. The caller holds the lease exclusive, so no replacement of this database
    is running, and one still open on the server can no longer commit unless it holds
    the lease itself (then the marker reads as "not known yet" and nothing changes)."""
    dialect = dialect_for(guard.location)
    what = f"interrupted {intent.operation} of backup {intent.backup_id}"
    if not intent.marker:
        return (f"the {what} left a journal without a commit marker, so dbguard cannot "
                "tell whether it committed; nothing was changed and the journal is kept: "
                "check the database, then restore the backup you want")
    done = dialect.committed(intent.marker)
    if done is None:
        return (f"the {what} is still running on the server (its transaction is open); "
                "nothing was decided: the next dbguard command looks again")
    dialect.cleanup()  # MariaDB: the scratch databases a killed restore left
    if intent.step == "rolling-back":
        return _recover_put_back(guard, dialect, intent, done)
    if not done:
        _close(guard, dialect, intent)
        return (f"undid the {what}: it never committed (the server holds no commit marker "
                "for it), so the database is exactly as it was before")
    return _finish(guard, dialect, intent, what)


def _finish(guard: Guard, dialect: Dialect, intent: journal.Intent, what: str) -> str:
    said = (f"finished the {what}: it committed (the server holds its commit marker), so "
            "the database holds that backup; recorded it")
    try:
        fingerprint = guard.catalog.get(intent.backup_id).schema_fingerprint
    except DbGuardError:  # the backup was deleted since: the marker alone decides
        fingerprint = ""
    if fingerprint and dialect.live_facts().schema_fingerprint != fingerprint:
        said += (f", but its schema now differs from the backup's: check it, and "
                 f"'dbguard rollback' puts safety backup {intent.safety_id} back")
    finish(guard, intent, by="recovery")
    dialect.forget(intent.marker)
    replaced(guard, Operation.RESTORE, intent.backup_id, intent.safety_id, "recovery")
    return said


def _recover_put_back(guard: Guard, dialect: Dialect, intent: journal.Intent,
                      done: bool) -> str:
    """The restore committed and failed its check; putting the safety backup back (with
    the journal's marker) was interrupted."""
    what = f"interrupted {intent.operation} of backup {intent.backup_id}"
    if done:
        _close(guard, dialect, intent)
        return (f"undid the {what}: it failed its check, and safety backup "
                f"{intent.safety_id} is back in place (the server holds the commit marker "
                "of putting it back)")
    finish(guard, intent, by="recovery")
    dialect.forget(intent.marker)
    replaced(guard, Operation.RESTORE, intent.backup_id, intent.safety_id, "recovery")
    return (f"the {what} committed but failed its check, and putting safety backup "
            f"{intent.safety_id} back never committed: the database holds backup "
            f"{intent.backup_id}; recorded it, so 'dbguard rollback' puts "
            f"{intent.safety_id} back")
