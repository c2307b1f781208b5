"""Restores of server databases through the same engine steps as SQLite's.

Guard (the lease exclusive: no bot has orders in flight, none can start one), verify
the backup (sha256 and the server tool's own look at the archive), safety backup, the
atomic replacement (one transaction on PostgreSQL, one RENAME TABLE on MariaDB), a
post-check (row counts and schema fingerprint against the manifest), the safety backup
put back the same way on any failure, and the host refresh.

No journal is written: the replacement itself is atomic on the server, so a crash
leaves the database exactly old or exactly new, never between; a crash between the
swap and its check leaves a database the next restore or ``verify`` can judge.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dbguard_plugin import journal, signals
from dbguard_plugin.backup import NothingToBackUp
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError
from dbguard_plugin.events import Operation
from dbguard_plugin.manifest import Manifest
from dbguard_plugin.servers import dialect_for
from dbguard_plugin.servers.credentials import scrub
from dbguard_plugin.servers.dialect import Dialect, compare
from dbguard_plugin.verify import verify_backup

if TYPE_CHECKING:
    from dbguard_plugin.guard import Guard
    from dbguard_plugin.restore import Outcome


def restore_server(guard: Guard, backup_id: str, *, force: bool = False,
                   who: str | None = None, operation: str = "restore") -> Outcome:
    from dbguard_plugin.restore import Outcome, RestoreError, finish, replaced

    clock = time.monotonic()
    dialect = dialect_for(guard.location)
    manifest = guard.catalog.get(backup_id)
    if manifest.backend != dialect.params.kind:
        raise ConfigError(f"backup {manifest.id} is a {manifest.backend} backup; "
                          f"{guard.location.redacted} is a {dialect.params.kind} database")
    timeout = guard.config.busy_timeout
    with guard.operation(Operation.RESTORE, force=force, who=who):
        result = verify_backup(guard.catalog, manifest)
        if not result.ok:
            guard.catalog.record_verification(manifest, False)
            raise VerificationError(f"backup {manifest.id} failed verification; nothing "
                                    "was changed: " + "; ".join(result.problems))
        dialect.cleanup()
        try:
            safety_id = guard.backup("pre-restore", keep=(manifest.id,)).id
        except NothingToBackUp:
            safety_id = ""
        signals.notify(signals.restore_started, guard, backup_id=manifest.id,
                       operation=operation)
        try:
            # atomic on the server: when this fails, nothing was changed
            dialect.restore_archive(guard.catalog.data_path(manifest), manifest, timeout)
        except Exception as exc:
            error = scrub(str(exc), dialect.params)
            signals.notify(signals.restore_failed, guard, backup_id=manifest.id,
                           error=error, rolled_back=False)
            raise RestoreError(f"{operation} of {manifest.id} failed ({error}); nothing "
                               "was changed") from None
        try:
            _check(guard, dialect, manifest)
        except Exception as exc:
            undone, exc = _put_back(guard, dialect, safety_id, exc, timeout)
            error = scrub(str(exc), dialect.params)
            signals.notify(signals.restore_failed, guard, backup_id=manifest.id,
                           error=error, rolled_back=undone)
            state = (f"the database was put back from safety backup {safety_id}" if undone
                     else "the database could not be put back: restore the safety backup "
                     f"{safety_id or '(none)'} with 'dbguard restore'")
            raise RestoreError(f"{operation} of {manifest.id} failed its check ({error}); "
                               f"{state}") from None
        finish(guard, journal.Intent(operation=operation, step="done",
                                     backup_id=manifest.id, safety_id=safety_id,
                                     database=guard.location.redacted))
        replaced(guard, Operation.RESTORE, manifest.id, safety_id, operation)
    return Outcome(operation, manifest.id, safety_id, guard.location.redacted,
                   round(time.monotonic() - clock, 3), None)


def _check(guard: Guard, dialect: Dialect, manifest: Manifest) -> None:
    """The live database must now hold exactly the backup: row counts and schema."""
    problems = compare(manifest, dialect.live_facts(), guard.location.redacted)
    if problems:
        raise VerificationError("; ".join(problems))


def _put_back(guard: Guard, dialect: Dialect, safety_id: str, error: Exception,
              timeout: float) -> tuple[bool, Exception]:
    """Restore the safety backup the same way; (done, the error to report)."""
    if not safety_id:
        return False, error
    try:
        safety = guard.catalog.get(safety_id)
        dialect.restore_archive(guard.catalog.data_path(safety), safety, timeout)
        _check(guard, dialect, safety)
    except Exception as again:  # reported with the first error; the caller scrubs both
        return False, DbGuardError(f"{error}; putting safety backup {safety_id} back "
                                   f"failed too: {again}")
    return True, error
