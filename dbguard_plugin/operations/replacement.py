"""What every replacement of the database shares, SQLite's and the servers', the
operator's and recovery's: its outcome, its error, its record and its announcement."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.core import audit, generation
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.events import Operation

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard


class RestoreError(DbGuardError):
    """A restore failed; the message says whether the database was put back."""


@dataclass(frozen=True)
class Outcome:
    operation: str
    backup_id: str
    safety_id: str
    database: str
    duration_s: float
    preview: dict[str, Any] | None = None
    #: the interrupted operation recovery could not decide that this one resolved, if any
    resolved: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_path(guard: Guard) -> Path:
    path = guard.location.sqlite_path
    if path is None:
        raise RestoreError(
            f"{guard.location.redacted}: restores of {guard.location.backend} databases are "
            "not supported by this version"
        )
    return path


def finish(guard: Guard, intent: journal.Intent,
           reopened: dict[str, list[str]] | None = None, *, by: str = "") -> None:
    """The last steps of a restore that committed and checked: record it, drop the journal.

    *reopened* names the orders and trades this replacement opened again (open in what
    it wrote, not before); a rollback of it may close exactly those without --force.
    *by* names what finished it when that is not the journaled operation ("recovery").
    """
    generation.record(guard.location.state_dir, intent.operation, intent.backup_id,
                      intent.safety_id, guard.location.redacted, reopened, by=by)
    reach("restore:recorded")
    for decided in journal.chain(intent)[1:]:  # an operator chose this over those
        audit.record_decision(guard.audit_path, audit.operator(), guard.location.redacted,
                              f"{intent.operation} of backup {intent.backup_id}", decided)
    journal.clear(guard.location.state_dir)
    reach("restore:done")


def replaced(guard: Guard, operation: Operation, backup_id: str, safety_id: str,
             kind: str) -> None:
    """Tell this process's host and every subscriber that the database changed."""
    guard.pm.hook.dbguard_refresh(guard=guard, operation=operation)
    signals.notify(signals.database_replaced, guard, operation=kind, backup_id=backup_id,
                   safety_id=safety_id)
    if kind == "rollback":
        signals.notify(signals.rolled_back, guard, backup_id=backup_id)


def last_replacement(guard: Guard) -> dict[str, Any] | None:
    """The record of the last restore, rollback or recovered restore of *guard*'s
    database (see :mod:`dbguard_plugin.core.generation`), or None."""
    return generation.last_replacement(guard.location.state_dir)
