"""The operation journal: the intent of a replacement, on disk before its first change.

``operation.json`` in the database's dbguard directory is written (fsynced, atomically)
before a restore, rollback or move touches anything, updated at each step that changes
what recovery must do, and removed after the last step. The next dbguard command, and
the plugin at session start, find a journal whose process is gone and finish or undo
that operation (see :mod:`dbguard_plugin.operations.recovery`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.files import fsync_dir, read_small, write_atomic
from dbguard_plugin.status import HOSTNAME

NAME = "operation.json"


@dataclass(frozen=True)
class Intent:
    """What an operation set out to do and how far it got."""

    operation: str  # restore, rollback or move
    step: str
    pid: int = field(default_factory=os.getpid)
    host: str = HOSTNAME
    started: float = field(default_factory=time.time)
    #: restore / rollback: the backup written into the database and the safety backup
    backup_id: str = ""
    safety_id: str = ""
    database: str = ""
    #: the database's schema cookie before the copy (informational: a migration bumps it
    #: too, so recovery decides from content, see dbguard_plugin.engines.sqlite.evidence)
    schema_version: int = -1
    #: sha256 of the stored files of the backup written and of the safety backup, from
    #: their manifests: recovery hashes the files again, so the states it compares the
    #: live database with are provably the ones this operation used
    backup_sha256: str = ""
    safety_sha256: str = ""
    #: move: where to, the scratch copy, and the config file to update
    new_path: str = ""
    tmp_path: str = ""
    config_path: str = ""
    old_url: str = ""
    new_url: str = ""
    #: server restore: the token its replacement commits with the data (a row or table
    #: on the server), so recovery can tell for certain whether it committed
    marker: str = ""
    #: move: the profiles file whose profiles name the database (they follow it too)
    profiles_path: str = ""
    #: set by recovery when the database is provably neither the state before nor the
    #: state after: what it found. Nothing changes until an operator decides.
    undecided: str = ""
    #: the undecided journal this operation (a restore an operator chose) resolves when
    #: it succeeds, and that is pending again when it is undone
    previous: dict[str, Any] | None = None

    def at(self, step: str) -> Intent:
        return replace(self, step=step)


def path_in(state_dir: Path) -> Path:
    return state_dir / NAME


class AwaitingDecision(DbGuardError):
    """An interrupted operation recovery could not decide is journaled here; another
    operation must not take its journal's place (it would forget it)."""


def write(state_dir: Path, intent: Intent) -> None:
    """Journal *intent*. Refused (AwaitingDecision) over the journal of another operation
    that awaits an operator's decision, unless *intent* carries it as ``previous``."""
    current = read(state_dir)  # an unreadable one is never overwritten
    if current is not None and current.undecided and not _same_operation(current, intent) \
            and intent.previous != asdict(current):
        raise AwaitingDecision(
            f"the interrupted {current.operation} of {current.database or 'this database'} "
            "awaits an operator's decision, so nothing was changed: see 'dbguard recover', "
            "then keep the database as it is ('dbguard recover --keep') or restore a backup"
        )
    write_atomic(path_in(state_dir), json.dumps(asdict(intent), indent=1).encode(), fsync=True)


class UnreadableJournal(AwaitingDecision):
    """The journal exists but cannot be read: an interrupted operation's record is
    damaged, so nothing may assume it was decided, and nothing may overwrite it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path}: the operation journal is unreadable ({reason}); an interrupted "
            "operation's record is damaged, so dbguard cannot tell what it left: check the "
            "database ('dbguard verify --all', PRAGMA integrity_check), then run 'dbguard "
            "recover --keep': it moves the journal aside, and a restore is possible again")
        self.path = path
        self.reason = reason


def read(state_dir: Path) -> Intent | None:
    """The journal here, None when there is none; UnreadableJournal when it is damaged
    (the message names the file, why, and what the operator can do)."""
    path = path_in(state_dir)
    try:
        data = json.loads(read_small(path))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return from_dict(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise UnreadableJournal(path, str(exc)) from None


def from_dict(data: dict[str, Any]) -> Intent:
    """An Intent from its JSON form; fields this version does not know are dropped."""
    known = set(Intent.__dataclass_fields__)
    return Intent(**{k: v for k, v in data.items() if k in known})


def chain(intent: Intent | None) -> list[Intent]:
    """*intent* and the undecided journals it carries, newest first."""
    found: list[Intent] = []
    while intent is not None:
        found.append(intent)
        intent = from_dict(intent.previous) if isinstance(intent.previous, dict) else None
    return found


def awaits_decision(state_dir: Path) -> bool:
    """Whether the journal here is one recovery could not decide (an unreadable journal
    counts: nothing may assume it was decided)."""
    try:
        intent = read(state_dir)
    except UnreadableJournal:
        return True
    return intent is not None and bool(intent.undecided)


def undone(state_dir: Path, intent: Intent) -> None:
    """*intent* was undone: the journal it replaced (an undecided one it would have
    resolved) is pending again, or there is none."""
    if isinstance(intent.previous, dict):
        write_atomic(path_in(state_dir), json.dumps(intent.previous, indent=1).encode(),
                     fsync=True)
    else:
        clear(state_dir)


def _same_operation(one: Intent, other: Intent) -> bool:
    return (one.pid, one.host, one.started) == (other.pid, other.host, other.started)


def clear(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_in(state_dir))
    fsync_dir(state_dir)
