"""The append-only audit log of forced operations and of operators' recovery decisions
(JSON lines, 0600)."""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_plugin.files import append_line, private_dir
from dbguard_plugin.status import HOSTNAME
from dbguard_plugin.verdict import Verdict

if TYPE_CHECKING:
    from dbguard_plugin.catalog.journal import Intent


#: The audit log's name in the dbguard directory, unless ``audit_log`` names another file.
AUDIT_LOG = "audit.jsonl"


def path_for(audit_log: str | None, state_dir: Path) -> Path:
    """Where the audit log of a database lives."""
    return Path(audit_log).expanduser() if audit_log else state_dir / AUDIT_LOG


def operator() -> str:
    """Who is acting: the login name, or the uid when there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def record_force(path: Path, verdict: Verdict, who: str, database: str) -> None:
    _append(path, who, database, operation=verdict.operation.value,
            reasons_overridden=[reason.as_dict() for reason in verdict.reasons])


def record_decision(path: Path, who: str, database: str, decision: str,
                    interrupted: Intent) -> None:
    """An operator's choice about an interrupted operation that recovery could not
    decide: *decision* is what was done instead ("kept the database as it was", or the
    restore that replaced it)."""
    _append(path, who, database, operation="recover", decision=decision,
            interrupted={key: getattr(interrupted, key) for key in (
                "operation", "step", "backup_id", "safety_id", "started", "undecided")})


def _append(path: Path, who: str, database: str, **details: Any) -> None:
    """One line of the audit log: when, who, from where, on what, and *details*."""
    entry = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "who": who,
        "pid": os.getpid(),
        "host": HOSTNAME,
        "database": database,
        **details,
    }
    if not path.parent.is_dir():
        private_dir(path.parent)
    append_line(path, json.dumps(entry, sort_keys=True))


def read(path: Path) -> list[dict[str, object]]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []
