"""The manifest that describes one backup, stored beside it as ``<id>.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbguard_plugin.errors import VerificationError

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
    format: int = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise VerificationError(f"{source}: not a dbguard manifest ({exc})") from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VerificationError(f"{path}: manifest is missing") from None
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: manifest is unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise VerificationError(f"{path}: manifest is not a JSON object")
        manifest = cls.from_dict(data, str(path))
        if not isinstance(manifest.sha256, str) or len(manifest.sha256) != 64:
            raise VerificationError(f"{path}: manifest has no valid sha256")
        return manifest
