"""The manifest that describes one backup, stored beside it as ``<id>.json``.

A manifest is read from disk, where a person or another tool may have edited it: every
field is checked for its type and range when read (:meth:`Manifest.from_dict`), so a
damaged one is refused with the field named, and never reaches code that sorts,
compares or adds its values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dbguard_plugin.catalog.codecs import COMPRESSIONS
from dbguard_plugin.errors import VerificationError, shown
from dbguard_plugin.files import read_small

REASONS = (
    "session-start",
    "session-end",
    "manual",
    "scheduled",
    "pre-restore",
    "pre-move",
    "pre-switch",
)

FORMAT = 1

#: What a backup id may look like: no separators, no dot-dot (the catalog's rule too).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
#: Control characters would let a hand-edited manifest rewrite an operator's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust, list and restore one backup."""

    id: str
    created: str  # UTC, ISO 8601 with a Z
    created_ts: float
    reason: str
    #: The stored file's name in the catalog, its size and sha256 (what ``verify`` checks).
    file: str
    size: int
    sha256: str
    #: none, gzip or zstd; when not none, raw_* describe the SQLite file inside.
    compression: str
    raw_size: int
    raw_sha256: str
    backend: str
    source: str  # the database URL with any password removed
    page_size: int = 0
    page_count: int = 0
    journal_mode: str = ""
    user_version: int = 0
    schema_fingerprint: str = ""
    tables: dict[str, int] = field(default_factory=dict)
    sqlite_version: str = ""
    server_version: str = ""
    dbguard_version: str = ""
    profile: str = ""
    trading_state: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    #: How the copy was taken: "snapshot" (files under a pinned read snapshot) or
    #: "backup-api" (SQLite's backup API, the fallback).
    copy_method: str = ""
    verified: bool = True
    check: str = "quick_check"
    note: str = ""
    #: "file": the backup is the data file ``file``; "repository": it is the chunks its
    #: ``chunk_list`` names, in the catalog's deduplicated repository (``file`` is then
    #: empty, ``size`` the stored bytes of all its chunks, ``sha256`` the chunk list's
    #: id, which commits to the content, and ``raw_sha256`` empty).
    storage: str = "file"
    chunk_list: str = ""
    chunk_count: int = 0
    chunk_size: int = 0
    #: Stored bytes this backup added to the repository (the rest it shares).
    added: int = 0
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        """The manifest in *data*, every field checked; VerificationError names the first
        field that is missing or wrong. Unknown keys are ignored (a newer dbguard's)."""
        if not isinstance(data, dict):
            raise VerificationError(f"{source}: manifest is not a JSON object")
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data:
                if spec.default is MISSING and spec.default_factory is MISSING:
                    raise VerificationError(f"{source}: not a dbguard manifest (no field "
                                            f"{spec.name!r})")
                continue
            value = data[spec.name]
            problem = _CHECKS[spec.name](value)
            if problem is not None:
                raise VerificationError(
                    f"{source}: manifest field {spec.name} = {shown(value, 60)} is invalid: "
                    f"expected {problem}")
            values[spec.name] = float(value) if spec.name in _FLOATS else value
        if values.get("storage") == "repository" and not values.get("chunk_list"):
            raise VerificationError(f"{source}: manifest field chunk_list is missing or "
                                    "empty: a backup in the repository names its chunk list")
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(read_small(path).decode("utf-8"))
        except FileNotFoundError:
            raise VerificationError(f"{path}: manifest is missing") from None
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: manifest is unreadable ({exc})") from None
        except RecursionError:
            raise VerificationError(f"{path}: manifest is unreadable (JSON nested too "
                                    "deeply)") from None
        return cls.from_dict(data, str(path))


def _text(pattern: re.Pattern[str] | None = None, what: str = "a string",
          max_len: int = 4096, control: bool = False) -> Callable[[Any], str | None]:
    """A check for a string field: its type, length, characters and shape."""

    def check(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > max_len:
            return what
        if not control and _CONTROL.search(value):
            return what + " without control characters"
        if pattern is not None and not pattern.match(value):
            return what
        return None

    return check


def _whole(minimum: int | None = 0) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum
        ):
            return "a whole number" + (f" >= {minimum}" if minimum is not None else "")
        return None

    return check


def _number(positive: bool) -> Callable[[Any], str | None]:
    what = "a finite number > 0" if positive else "a finite number >= 0"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return what
        try:
            ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
        except OverflowError:  # an int too large for a float
            ok = False
        return None if ok else what

    return check


def _tables(value: Any) -> str | None:
    what = "an object of table name -> row count (a whole number >= 0)"
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int) and v >= 0
        for k, v in value.items()
    ):
        return what
    return None


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else "an object"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in allowed else \
            "one of " + ", ".join(allowed)

    return check


_SHA = _text(_SHA256, "64 hex digits (a sha256)")
_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "id": _text(ID_PATTERN, "a backup id: letters, digits, '.', '_' and '-'", 128),
    "created": _text(None, "a UTC time such as 2025-01-31T12:00:00.000Z", 64),
    "created_ts": _number(positive=True),
    "reason": _text(None, "a short reason such as manual", 64),
    "file": _text(None, "the data file's name", 255),
    "size": _whole(0),
    "sha256": _SHA,
    "compression": _one_of(*COMPRESSIONS),
    "raw_size": _whole(0),
    "raw_sha256": lambda v: None if v == "" else _SHA(v),
    "backend": _text(re.compile(r"^[a-z0-9_+-]{1,32}$"), "a backend name such as sqlite"),
    "source": _text(None, "the database URL (redacted)"),
    "page_size": _whole(0),
    "page_count": _whole(0),
    "journal_mode": _text(None, "a journal mode such as wal", 32),
    "user_version": _whole(None),
    "schema_fingerprint": _text(None, "a string", 256),
    "tables": _tables,
    "sqlite_version": _text(None, "a version string", 64),
    "server_version": _text(None, "a version string", 256),
    "dbguard_version": _text(None, "a version string", 64),
    "profile": _text(None, "a profile name", 128),
    "trading_state": _object,
    "duration_s": _number(positive=False),
    "copy_method": _text(None, "a string", 32),
    "verified": _bool,
    "check": _text(None, "a check level such as quick_check", 200),
    "note": _text(None, "a string", control=True),
    "storage": _one_of("file", "repository"),
    "chunk_list": lambda v: None if v == "" else _SHA(v),
    "chunk_count": _whole(0),
    "chunk_size": _whole(0),
    "added": _whole(0),
    "format": _whole(1),
}
_FLOATS = ("created_ts", "duration_s")
