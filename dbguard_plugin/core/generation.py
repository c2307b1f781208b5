"""The record that the database was replaced, and by which operation.

Two files in the dbguard directory hold it. ``last-replacement.json`` names the last
restore, rollback or recovered restore and its safety backup (what ``dbguard rollback``
puts back, and what prune must keep). ``generation.json`` counts every replacement and
names the one that made it: a bot in another process, which hooks and signals do not
reach, notices the change on its next ``Guard.tick()`` and refreshes its own state.

Both are written whole by rename, so a reader sees the old record or the new one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dbguard_plugin.events import Operation
from dbguard_plugin.files import read_small, write_json_atomic

LAST = "last-replacement.json"
GENERATION = "generation.json"

#: What replaced the database, as recorded in generation.json, and the operation a
#: host's ``dbguard_refresh`` hook is told. A rollback and a restore that recovery
#: finished wrote a backup into the database, as a restore does.
REPLACED_BY: dict[str, Operation] = {
    "restore": Operation.RESTORE,
    "rollback": Operation.RESTORE,
    "recovery": Operation.RESTORE,
    "move": Operation.MOVE,
    "profile_switch": Operation.PROFILE_SWITCH,
}


def bump(state_dir: Path, operation: str) -> None:
    """Count one more replacement of the database, made by *operation* (a key of
    :data:`REPLACED_BY`)."""
    number = _number(_load(state_dir / GENERATION))
    write_json_atomic(state_dir / GENERATION, {"generation": number + 1,
                                               "operation": operation, "when": time.time()})


def read(state_dir: Path) -> tuple[int, Operation]:
    """(how many replacements, the operation of the last one to tell a host); (0,
    RESTORE) before the first. A file written before the operation was recorded, or
    naming one this version does not know, reads as a restore."""
    number, kind = read_kind(state_dir)
    return number, told(kind)


def read_kind(state_dir: Path) -> tuple[int, str | None]:
    """(how many replacements, what made the last one as recorded, or None)."""
    data = _load(state_dir / GENERATION)
    kind = data.get("operation") if isinstance(data, dict) else None
    return _number(data), kind if isinstance(kind, str) else None


def told(kind: str | None) -> Operation:
    """The operation a host is told for a recorded *kind* (RESTORE when unknown)."""
    return REPLACED_BY.get(kind, Operation.RESTORE) if kind is not None else Operation.RESTORE


def record(state_dir: Path, operation: str, backup_id: str, safety_id: str, database: str,
           reopened: dict[str, list[str]] | None = None, *, by: str = "") -> None:
    """Record a replacement that committed and checked: which backup it wrote and the
    safety backup that undoes it, then the count (*by*: what made it, when not
    *operation* itself, e.g. recovery)."""
    write_json_atomic(state_dir / LAST, {
        "operation": operation, "backup_id": backup_id, "safety_id": safety_id,
        "when": time.time(), "database": database,
        **({"reopened": reopened} if reopened is not None else {}),
    })
    bump(state_dir, by or operation)


def last_replacement(state_dir: Path) -> dict[str, Any] | None:
    """The record of the last restore, rollback or recovered restore, or None."""
    try:
        data: dict[str, Any] = json.loads(read_small(state_dir / LAST))
    except (FileNotFoundError, ValueError):
        return None
    return data


def _load(path: Path) -> Any:
    try:
        return json.loads(read_small(path))
    except (FileNotFoundError, ValueError):
        return {}


def _number(data: Any) -> int:
    # A damaged count starts again from 0; a count of the wrong type (a list) raises,
    # as it always has, for the caller to report.
    try:
        return int(data.get("generation", 0))
    except (ValueError, AttributeError):
        return 0
