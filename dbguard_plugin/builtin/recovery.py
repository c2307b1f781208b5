"""Built-in plugin: a bot starting its session first settles an interrupted operation."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbguard_plugin.catalog.journal import UnreadableJournal
from dbguard_plugin.operations.recovery import recover, undecided
from dbguard_plugin.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.events import SessionInfo

log = logging.getLogger(__name__)


@hookimpl(tryfirst=True)
def dbguard_session_started(guard: Guard, session: SessionInfo) -> None:
    """Built-in plugin: a bot starting its session first settles an interrupted operation;
    one that cannot be decided is reported, and in production it pauses new orders."""
    try:
        recover(guard)
    except Exception as exc:  # the bot must start; the next dbguard command tries again
        log.error("dbguard: recovering an interrupted operation failed: %s", exc)
    try:
        pending = undecided(guard)
    except UnreadableJournal as exc:
        log.error("dbguard: %s", exc)
        _pause_in_production(guard, f"{exc}; new orders are paused until then")
        return
    except Exception as exc:  # said by recover's error above
        log.error("dbguard: reading the operation journal failed: %s", exc)
        return
    if pending is None:
        return
    log.error("dbguard: %s", " ".join(line.strip() for line in pending.lines()))
    _pause_in_production(guard, f"{pending.summary()}; new orders are paused until an "
                         "operator chooses: "
                         + " or ".join(f"'{command}'" for command in pending.commands()))


def _pause_in_production(guard: Guard, why: str) -> None:
    """The guard never resumes orders while the journal awaits a decision (an unreadable
    one too), whatever else happens (a new backup); afterwards, as after any pause, once
    a verified backup newer than the session exists (the session-start backup)."""
    if guard.config.environment == "production" and guard.paused is None:
        guard.pause_trading(why)
