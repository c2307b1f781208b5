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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.core import audit
from dbguard_plugin.engines.sqlite import evidence
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.events import Operation
from dbguard_plugin.operations import move
from dbguard_plugin.operations.replacement import finish, live_path, replaced
from dbguard_plugin.operations.sqlite_write import post_check, put_back
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
        pending = undecided(guard)
        intent = journal.read(guard.location.state_dir)
        if pending is None or intent is None:
            raise DbGuardError(f"no interrupted operation on {db} awaits a decision; "
                               "'dbguard recover' shows what is pending")
        for decided in journal.chain(intent):
            audit.record_decision(guard.audit_path, who, db, "kept the database as it was",
                                  decided)
        if intent.operation == "move":
            move.forget(intent)
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
    try:
        if intent.operation == "move":
            said = move.recover(guard, intent)
            return [said] if said else []
        if guard.location.sqlite_path is None:
            return _recover_server(guard, intent)
        return _decide(guard, intent)
    except evidence.DatabaseBusy as exc:
        log.warning("dbguard: %s", exc)
        return []


def _recover_server(guard: Guard, intent: journal.Intent) -> list[str]:
    """A server database's journal: its own engine decides (servers.restore)."""
    # why here: the server restore loads the server engine (SQLAlchemy and a driver)
    from dbguard_plugin.operations.server_restore import recover_server

    said = recover_server(guard, intent)
    return [said] if said else []


def _decide(guard: Guard, intent: journal.Intent) -> list[str]:
    """A restore or rollback: finish it, undo it, or leave it undecided (see module)."""
    catalog = guard.catalog
    now = evidence.of_database(live_path(guard), guard.config.busy_timeout)
    what = f"{intent.operation} of backup {intent.backup_id}"
    unknown = evidence.Found(None, f"the journal's step {intent.step!r} is unknown")
    wrote = held = unknown
    if intent.step == "restoring":
        wrote = evidence.of_backup(catalog, intent.backup_id, intent.backup_sha256)
        if now.same_as(wrote):
            return _finish(guard, intent)
        held = evidence.of_backup(catalog, intent.safety_id, intent.safety_sha256)
        if now.same_as(held):
            journal.undone(guard.location.state_dir, intent)
            return [f"undid the interrupted {what}: it had not committed, so the database "
                    "is exactly as it was before"]
    elif intent.step == "rolling-back":
        held = evidence.of_backup(catalog, intent.safety_id, intent.safety_sha256)
        if now.same_as(held):
            journal.undone(guard.location.state_dir, intent)
            return [f"undid the interrupted {what}: safety backup {intent.safety_id} is "
                    "back in place"]
        wrote = evidence.of_backup(catalog, intent.backup_id, intent.backup_sha256)
        if now.same_as(wrote) and intent.safety_id and held.digest is not None:
            _put_back(guard, intent)
            return [f"undid the interrupted {what}: safety backup {intent.safety_id} is "
                    "back in place"]
    return _leave_undecided(guard, intent, _found(intent, now, wrote, held))


def _finish(guard: Guard, intent: journal.Intent) -> list[str]:
    """The database holds exactly the backup: check it, then record the restore."""
    what = f"{intent.operation} of backup {intent.backup_id}"
    live = live_path(guard)
    try:
        # No row counts: they were proven equal with the content.
        post_check(live, guard.catalog.get(intent.backup_id), guard.config.restore_check)
    except DbGuardError as exc:
        held = evidence.of_backup(guard.catalog, intent.safety_id, intent.safety_sha256)
        if held.digest is None:
            return _leave_undecided(guard, intent, f"the database holds backup "
                                    f"{intent.backup_id} but fails its check ({exc}), and "
                                    f"the safety backup cannot be read: {held.problem}")
        _put_back(guard, intent)
        return [f"undid the interrupted {what}: the written database failed its check "
                f"({exc}); safety backup {intent.safety_id} is back in place"]
    finish(guard, intent, by="recovery")
    replaced(guard, Operation.RESTORE, intent.backup_id, intent.safety_id, "recovery")
    return [f"finished the interrupted {what}: the database holds that backup, checked"]


def _found(intent: journal.Intent, now: evidence.Found, wrote: evidence.Found,
           held: evidence.Found) -> str:
    """What recovery found, in words that are true whatever caused it."""
    if now.digest is None:
        return f"the database cannot be read: {now.problem}"
    before = (f"safety backup {intent.safety_id} (what it held before the "
              f"{intent.operation})" if intent.safety_id
              else f"an empty database (there was none before the {intent.operation})")
    parts = [f"the database holds neither backup {intent.backup_id} (what the "
             f"{intent.operation} writes) nor {before}: it was written to after the safety "
             "backup was taken (by the bot, a migration or another program)"]
    parts += [f"it cannot be compared with one of them: {state.problem}"
              for state in (wrote, held) if state.digest is None and state.problem]
    return "; ".join(dict.fromkeys(parts))


def _leave_undecided(guard: Guard, intent: journal.Intent, found: str) -> list[str]:
    journal.write(guard.location.state_dir, dataclasses.replace(intent, undecided=found))
    return []


def _put_back(guard: Guard, intent: journal.Intent) -> None:
    put_back(guard.catalog, guard.catalog.get(intent.safety_id), live_path(guard),
             guard.config.busy_timeout)
    journal.undone(guard.location.state_dir, intent)
