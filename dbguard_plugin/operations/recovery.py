"""Finishing or undoing what an interrupted operation left behind, when it can prove which.

Run by every ``dbguard`` command before its own work and by the plugin at session
start. It needs the lease exclusive, so it never runs beside a live operation or while
a bot has orders in flight; deferring it is harmless, because SQLite already left the
database exactly old or exactly new, and recovery only decides which, and says so.

It decides from content (:mod:`dbguard_plugin.engines.sqlite.evidence`): a restore or rollback is
finished only when the live database holds exactly the backup it wrote, and undone only
when it holds exactly what it held before (the safety backup). Anything else, such as
a bot or a migration that wrote after the crash, or a database SQLite cannot read,
changes nothing: the journal is marked undecided, keeps the safety backup pinned, and
every command and session start reports it until an operator chooses, with ``dbguard
recover --keep`` (keep the database as it is) or ``dbguard restore SAFETY_ID --yes``
(put back what it held before).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.core import audit
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.files import fsync_dir
from dbguard_plugin.status import HOSTNAME, pid_alive

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

log = logging.getLogger(__name__)

KEEP = "dbguard recover --keep"


@dataclass(frozen=True)
class Undecided:
    """An interrupted operation recovery could not decide, and what it found."""

    operation: str
    step: str
    backup_id: str
    safety_id: str
    database: str
    found: str
    started: float

    def commands(self) -> list[str]:
        """The operator's two choices: keep the database as it is, or put back what it
        held before (a move has only the first)."""
        if self.operation == "move" or not self.safety_id:
            return [KEEP]
        return [KEEP, f"dbguard restore {self.safety_id} --yes"]

    def summary(self) -> str:
        if self.operation == "move":
            return f"recovery could not decide the interrupted move of {self.database}"
        return (f"recovery could not decide the interrupted {self.operation} of backup "
                f"{self.backup_id} into {self.database}")

    def lines(self) -> list[str]:
        kept = f" and safety backup {self.safety_id} are" if self.safety_id else " is"
        said = [self.summary(), f"  found: {self.found}",
                f"  nothing was changed; the journal{kept} kept until you choose:",
                f"  - keep the database as it is now: {KEEP}"]
        if len(self.commands()) > 1:
            said.append(f"  - put back what it held before the {self.operation}: "
                        f"{self.commands()[1]}")
        return said

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "commands": self.commands()}


def undecided(guard: Guard) -> Undecided | None:
    """The interrupted operation awaiting an operator's decision here, if any (no
    lease needed: the journal is only read)."""
    state_dir = guard.location.state_dir
    if not journal.path_in(state_dir).exists():
        return None
    intent = journal.read(state_dir)
    if intent is None or not intent.undecided:
        return None
    return Undecided(intent.operation, intent.step, intent.backup_id, intent.safety_id,
                     intent.database or guard.location.redacted, intent.undecided,
                     intent.started)


def recover(guard: Guard, *, reexamine: bool = False) -> list[str]:
    """Finish or undo an interrupted operation and clear interrupted backups' leftovers.

    Returns one sentence per thing done, for the operator. A journal already found
    undecided is looked at again only with *reexamine* (``dbguard recover``); it is
    reported by :func:`undecided` and the ``recovery-undecided`` signal.
    """
    said: list[str] = []
    state_dir = guard.location.state_dir
    if state_dir.is_dir() and not state_dir.is_symlink() and journal.path_in(state_dir).exists():
        said += _with_lease(guard, reexamine)
    said += _leftovers(guard)
    for sentence in said:
        log.info("dbguard: %s", sentence)
    pending = undecided(guard)
    if pending is not None:
        signals.notify(signals.recovery_undecided, guard, operation=pending.operation,
                       backup_id=pending.backup_id, safety_id=pending.safety_id,
                       found=pending.found, commands=pending.commands(),
                       database=pending.database)
    return said


def keep(guard: Guard, who: str) -> Undecided:
    """The operator keeps the database as it is: the undecided journal is closed (and
    its safety backup unpinned, an ordinary backup again) and the choice audited."""
    db = guard.location.redacted
    if not guard.lease.take_exclusive(0):
        raise DbGuardError(f"{db}: an operation is running or a bot has orders in flight; "
                           "nothing was changed: run 'dbguard recover --keep' again when "
                           "the bot is idle")
    try:
        try:
            pending = undecided(guard)
        except journal.UnreadableJournal as exc:
            return _keep_unreadable(guard, who, exc.reason)
        intent = journal.read(guard.location.state_dir)
        if pending is None or intent is None:
            raise DbGuardError(f"no interrupted operation on {db} awaits a decision; "
                               "'dbguard recover' shows what is pending")
        for decided in journal.chain(intent):
            audit.record_decision(guard.audit_path, who, db, "kept the database as it was",
                                  decided)
        if intent.operation == "move":
            # why here: as in _recover
            from dbguard_plugin.operations.move import forget

            forget(intent)
        journal.clear(guard.location.state_dir)
    finally:
        guard.lease.release_exclusive()
    return pending


def _with_lease(guard: Guard, reexamine: bool) -> list[str]:
    if guard.lease.holding_exclusive:
        return _recover(guard, reexamine)
    if guard.lease.take_exclusive(0):
        try:
            return _recover(guard, reexamine)
        finally:
            guard.lease.release_exclusive()
    intent = journal.read(guard.location.state_dir)
    if intent is not None and intent.host == HOSTNAME and pid_alive(intent.pid):
        log.info("dbguard: %s by pid %d is in progress", intent.operation, intent.pid)
    elif intent is not None and not intent.undecided:
        log.warning("dbguard: an interrupted operation on %s waits for the lease to "
                    "be free before it is finished or undone", guard.location.redacted)
    return []


def _keep_unreadable(guard: Guard, who: str, why: str) -> Undecided:
    """--keep over a damaged journal: it is moved aside (``operation.json.damaged-<ms>``,
    kept as evidence), never deleted, and the choice audited; call with the lease."""
    state_dir = guard.location.state_dir
    path = journal.path_in(state_dir)
    aside = path.with_name(f"{path.name}.damaged-{int(time.time() * 1000)}")
    os.replace(path, aside)
    fsync_dir(state_dir)
    found = f"its operation journal was unreadable ({why}) and is moved aside to {aside}"
    audit.record_decision(guard.audit_path, who, guard.location.redacted,
                          "kept the database as it was",
                          journal.Intent("unknown", "", started=0.0, undecided=found))
    return Undecided("unknown", "", "", "", guard.location.redacted, found, 0.0)


def _leftovers(guard: Guard) -> list[str]:
    catalog = guard.catalog
    if not (catalog.directory.is_dir() and catalog.has_leftovers()):
        return []
    try:
        with catalog.locked(timeout=0):
            removed = catalog.cleanup()
    except DbGuardError:
        removed = []  # a backup is running; it cleans up after itself
    if not removed:
        return []
    return [f"removed what an interrupted backup left in {catalog.directory}: "
            + ", ".join(removed)]


def _recover(guard: Guard, reexamine: bool) -> list[str]:
    intent = journal.read(guard.location.state_dir)
    if intent is None or (intent.undecided and not reexamine):
        return []
    # why here: deciding loads the move, the restore's writer and the SQLite engine
    # (a dozen modules) that every command would otherwise pay for a rare journal
    from dbguard_plugin.operations.settle import settle

    return settle(guard, intent)
