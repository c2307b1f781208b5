"""Where a database lives and where dbguard keeps its own files for it."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dbguard_plugin.errors import ConfigError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# user:password@ anywhere, with or without a scheme before it (a URL typed without "://"
# must not leak its password into an error message either).
_CREDENTIALS = re.compile(r"([^\s:/@'\"]+:)[^\s'\"/]*@")


@dataclass(frozen=True)
class DatabaseLocation:
    """A database URL with its password hidden, and dbguard's directory beside it."""

    url: URL
    #: The URL as it may appear in logs, manifests and errors: never the password.
    redacted: str
    #: The SQLite file, or None for a server database.
    sqlite_path: Path | None
    #: dbguard's private directory for this database: lease, status, audit log.
    state_dir: Path

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()


def locate(url: str | URL, state_dir: str | Path | None = None) -> DatabaseLocation:
    """Parse *url* and decide where dbguard keeps its files for that database.

    For SQLite the directory sits beside the database (``tradesv3.sqlite.dbguard/``),
    so every process that opens the same file finds the same lease. For a server
    database it sits under the user's state directory unless *state_dir* is given.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError) as exc:
        shown = redact(str(url))
        raise ConfigError(
            f"database URL {shown!r} is not a SQLAlchemy URL ({exc}); "
            "expected e.g. sqlite:////path/to/tradesv3.sqlite"
        ) from None
    redacted = parsed.render_as_string(hide_password=True)
    sqlite_path: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ConfigError(
                f"database URL {redacted!r} is an in-memory SQLite database; "
                "dbguard guards files: give sqlite:////absolute/path/to/file.sqlite"
            )
        if database.startswith("file:"):
            database = database[5:].split("?", 1)[0]
        sqlite_path = Path(os.path.abspath(os.path.expanduser(database)))
    if state_dir is not None:
        directory = Path(state_dir).expanduser().absolute()
    elif sqlite_path is not None:
        directory = sqlite_path.with_name(sqlite_path.name + ".dbguard")
    else:
        digest = hashlib.sha256(redacted.encode()).hexdigest()[:12]
        name = _SAFE.sub("_", f"{parsed.get_backend_name()}-{parsed.host}-{parsed.database}")
        directory = user_state_dir() / f"{name}-{digest}"
    return DatabaseLocation(parsed, redacted, sqlite_path, directory)


def redact(text: str) -> str:
    """Hide a password in anything that looks like a URL with credentials."""
    return _CREDENTIALS.sub(r"\1***@", text)


def user_state_dir() -> Path:
    """The platform's per-user state directory, for files not tied to one database."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "dbguard"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dbguard"
