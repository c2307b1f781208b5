"""Deciding an interrupted operation from content: finish it, undo it, or leave it
undecided for the operator (the rules are in :mod:`dbguard_plugin.operations.recovery`).

Loaded by recovery only when a journal says an operation was interrupted.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from dbguard_plugin.catalog import journal
from dbguard_plugin.engines.sqlite import evidence
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.events import Operation
from dbguard_plugin.operations import move
from dbguard_plugin.operations.replacement import finish, live_path, replaced
from dbguard_plugin.operations.sqlite_write import post_check, put_back

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

log = logging.getLogger(__name__)


def settle(guard: Guard, intent: journal.Intent) -> list[str]:
    """Finish or undo the interrupted operation *intent* (the lease held); one sentence
    per thing done, none when it is left undecided or the database is busy."""
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
