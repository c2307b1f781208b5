"""Errors dbguard raises, each with the CLI exit code that reports it."""

from __future__ import annotations

import sqlite3
from typing import Any


class DbGuardError(Exception):
    """Base class: a failure that the CLI reports with exit code 1."""

    exit_code = 1


class ConfigError(DbGuardError):
    """Configuration or usage is wrong: exit 2. The message names the key and the fix."""

    exit_code = 2


class VetoedError(DbGuardError):
    """The guard refused the operation: exit 3. ``verdict`` holds every reason."""

    exit_code = 3

    def __init__(self, verdict: object, message: str) -> None:
        super().__init__(message)
        self.verdict = verdict


class VerificationError(DbGuardError):
    """A backup or database failed verification: exit 4."""

    exit_code = 4


class UnsafePathError(ConfigError):
    """A path or name from a user would escape its directory or follow a symlink."""


#: What a host call contains instead of raising: faults of the disk (a full disk, a
#: read-only directory, an I/O error), of a server, and of data read back from disk (a
#: manifest or status file with a wrong-typed field). A caller's own mistake (a missing
#: argument) is checked before any of this runs and still raises.
FAULTS: tuple[type[Exception], ...] = (
    OSError, sqlite3.Error, DbGuardError, ValueError, TypeError, LookupError,
)


def shown(value: Any, limit: int = 80) -> str:
    """A short, printable rendering of a bad value for an error message (a value nested
    too deeply to render is named by its type)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
