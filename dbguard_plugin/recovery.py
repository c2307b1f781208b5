"""Finishing or undoing what an interrupted operation left behind.

Run by every ``dbguard`` command before its own work and by the plugin at session
start. It needs the lease exclusive, so it never runs beside a live operation or while
a bot has orders in flight; deferring it is harmless, because SQLite already left the
database exactly old or exactly new, and recovery only decides which, and says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbguard_plugin import journal
from dbguard_plugin.backup import opened_copy
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.events import Operation
from dbguard_plugin.hookspecs import hookimpl
from dbguard_plugin.status import HOSTNAME, pid_alive

if TYPE_CHECKING:
    from dbguard_plugin.events import SessionInfo
    from dbguard_plugin.guard import Guard

log = logging.getLogger(__name__)


@hookimpl(tryfirst=True)
def dbguard_session_started(guard: Guard, session: SessionInfo) -> None:
    """Built-in plugin: a bot starting its session first settles an interrupted operation."""
    try:
        recover(guard)
    except Exception as exc:  # the bot must start; the next dbguard command tries again
        log.error("dbguard: recovering an interrupted operation failed: %s", exc)


def recover(guard: Guard) -> list[str]:
    """Finish or undo an interrupted operation and clear interrupted backups' leftovers.

    Returns one sentence per thing done, for the operator.
    """
    said: list[str] = []
    state_dir = guard.location.state_dir
    if state_dir.is_dir() and not state_dir.is_symlink() and journal.path_in(state_dir).exists():
        if guard.lease.holding_exclusive:
            said += _recover(guard)
        elif guard.lease.take_exclusive(0):
            try:
                said += _recover(guard)
            finally:
                guard.lease.release_exclusive()
        else:
            intent = journal.read(state_dir)
            if intent is not None and intent.host == HOSTNAME and pid_alive(intent.pid):
                log.info("dbguard: %s by pid %d is in progress", intent.operation, intent.pid)
            else:
                log.warning("dbguard: an interrupted operation on %s waits for the lease to "
                            "be free before it is finished or undone", guard.location.redacted)
    catalog = guard.catalog
    if catalog.directory.is_dir() and catalog.has_leftovers():
        try:
            with catalog.locked(timeout=0):
                removed = catalog.cleanup()
        except DbGuardError:
            removed = []  # a backup is running; it cleans up after itself
        if removed:
            said.append(f"removed what an interrupted backup left in {catalog.directory}: "
                        + ", ".join(removed))
    for sentence in said:
        log.info("dbguard: %s", sentence)
    return said


def _recover(guard: Guard) -> list[str]:
    from dbguard_plugin import move, restore

    intent = journal.read(guard.location.state_dir)
    if intent is None:
        return []
    if intent.operation == "move":
        return [move.recover(guard, intent)]
    if guard.location.sqlite_path is None:  # a server restore: its commit marker decides
        from dbguard_plugin.servers.restore import recover_server
        return [recover_server(guard, intent)]
    live = restore.live_path(guard)
    what = f"{intent.operation} of backup {intent.backup_id}"
    committed = restore.schema_version(live) != intent.schema_version
    if intent.step == "restoring" and committed:
        manifest = guard.catalog.get(intent.backup_id)
        try:
            # No row counts: the bot may have written since the interrupted restore.
            restore.post_check(live, manifest, guard.config.restore_check)
        except DbGuardError as exc:
            _put_back(guard, intent)
            return [f"undid the interrupted {what}: the written database failed its check "
                    f"({exc}); safety backup {intent.safety_id} is back in place"]
        restore.finish(guard, intent)
        restore.replaced(guard, Operation.RESTORE, intent.backup_id, intent.safety_id,
                         "recovery")
        return [f"finished the interrupted {what}: the database holds that backup, checked"]
    if intent.step == "restoring":
        journal.clear(guard.location.state_dir)
        return [f"undid the interrupted {what}: it had not committed, so the database is "
                "exactly as it was before"]
    if not committed:
        _put_back(guard, intent)
    else:
        journal.clear(guard.location.state_dir)
    return [f"undid the interrupted {what}: safety backup {intent.safety_id} is back in place"]


def _put_back(guard: Guard, intent: journal.Intent) -> None:
    from dbguard_plugin import restore

    live = restore.live_path(guard)
    safety = guard.catalog.get(intent.safety_id)
    with opened_copy(guard.catalog.data_path(safety), safety.compression,
                     guard.catalog.directory) as plain:
        counts = restore.write_into(live, plain, guard.config.busy_timeout)
    restore.post_check(live, safety, "quick_check", counts)
    journal.clear(guard.location.state_dir)
