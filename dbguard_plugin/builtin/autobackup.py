"""Built-in plugin: verified backups at session boundaries.

A failed automatic backup never reaches the host as an exception: it is logged and
signalled (``backup-failed``). When ``require_backup_before_session`` is on (the
production default) a failed session-start backup pauses new orders until a verified
backup newer than the session start exists (``dbguard backup`` makes one).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbguard_plugin.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.events import SessionInfo

log = logging.getLogger(__name__)


@hookimpl
def dbguard_session_started(guard: Guard, session: SessionInfo) -> None:
    if guard.config.backup_on_session_start:
        ok = guard.automatic_backup("session-start")
        if not ok and guard.config.requires_backup_before_session:
            guard.pause_trading(
                "the session-start backup failed; new orders are paused until a verified "
                "backup exists: fix the cause and run 'dbguard backup'"
            )


@hookimpl(tryfirst=True)
def dbguard_session_ending(guard: Guard, session: SessionInfo) -> None:
    if guard.config.backup_on_session_end:
        guard.automatic_backup("session-end")
