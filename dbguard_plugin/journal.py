"""The operation journal: the intent of a replacement, on disk before its first change.

``operation.json`` in the database's dbguard directory is written (fsynced, atomically)
before a restore, rollback or move touches anything, updated at each step that changes
what recovery must do, and removed after the last step. The next dbguard command, and
the plugin at session start, find a journal whose process is gone and finish or undo
that operation (see :mod:`dbguard_plugin.recovery`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dbguard_plugin.files import fsync_dir, write_atomic
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
    #: the database's schema cookie before the copy: the backup API bumps it on commit,
    #: so recovery can tell whether the copy committed without comparing any content
    schema_version: int = -1
    #: move: where to, the scratch copy, and the config file to update
    new_path: str = ""
    tmp_path: str = ""
    config_path: str = ""
    old_url: str = ""
    new_url: str = ""
    #: server restore: the token its replacement commits with the data (a row or table
    #: on the server), so recovery can tell for certain whether it committed
    marker: str = ""

    def at(self, step: str) -> Intent:
        return replace(self, step=step)


def path_in(state_dir: Path) -> Path:
    return state_dir / NAME


def write(state_dir: Path, intent: Intent) -> None:
    write_atomic(path_in(state_dir), json.dumps(asdict(intent), indent=1).encode(), fsync=True)


def read(state_dir: Path) -> Intent | None:
    try:
        data: dict[str, Any] = json.loads(path_in(state_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    known = set(Intent.__dataclass_fields__)
    return Intent(**{k: v for k, v in data.items() if k in known})


def clear(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_in(state_dir))
    fsync_dir(state_dir)
