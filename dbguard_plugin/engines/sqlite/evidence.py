"""Which state an interrupted replacement left a database in, proven from its content.

Recovery finishes or undoes an operation only when the live database is exactly the
state before it or exactly the state after it. Neither the schema cookie nor the file's
bytes can tell: a migration after the crash bumps the cookie as a committed copy does,
and a VACUUM rewrites every page of unchanged rows. The logical content digest
(:func:`~dbguard_plugin.engines.sqlite.facts.content_digest`) can, and it is computed here, at
recovery time, so that restores pay nothing for it: of the live database, and of the
backups that hold the two states, whose stored files are first hashed against the
sha256 the journal recorded (so the state compared with is the one the operation used).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.sqlite.backup import file_digest, sqlite_uri
from dbguard_plugin.engines.sqlite.facts import content_digest
from dbguard_plugin.engines.sqlite.stored import opened_backup
from dbguard_plugin.errors import DbGuardError


class DatabaseBusy(DbGuardError):
    """Another connection holds the database's lock now: look again later."""


@dataclass(frozen=True)
class Found:
    """A state's content digest, or why it could not be read."""

    digest: str | None
    problem: str = ""

    def same_as(self, other: Found) -> bool:
        return self.digest is not None and self.digest == other.digest


def _empty_digest() -> str:
    conn = sqlite3.connect(":memory:")
    try:
        return content_digest(conn)
    finally:
        conn.close()


#: What "no database" holds: a missing file, or a new one that nothing was written to.
EMPTY = Found(_empty_digest())


def of_database(path: Path, busy_timeout: float = 30.0) -> Found:
    """The content of the live database at *path* (a missing file holds nothing)."""
    if not path.exists():
        return EMPTY
    try:
        # read-write: a hot journal a killed copy left must be rolled back by this read,
        # and a read-only open cannot: SQLite refuses to read a database with a hot journal
        return Found(_digest(path, "rw", busy_timeout))
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise DatabaseBusy(f"{path} is locked by another connection ({exc}); the "
                               "next dbguard command looks again") from None
        return Found(None, f"SQLite cannot read {path} ({exc})")
    except (sqlite3.DatabaseError, OSError) as exc:
        return Found(None, f"SQLite cannot read {path} ({exc})")


def of_backup(catalog: Catalog, backup_id: str, sha256: str = "") -> Found:
    """The content of backup *backup_id*, once its stored file is proven to be the one
    whose sha256 the journal recorded (*sha256*; the manifest's when the journal, of an
    older version, has none). No id: the operation started from no database."""
    if not backup_id:
        return EMPTY
    try:
        manifest = catalog.get(backup_id)
    except (DbGuardError, OSError) as exc:
        return Found(None, f"backup {backup_id} cannot be read ({exc})")
    if manifest.storage == "repository":
        expected = sha256 or manifest.sha256
        if expected != manifest.sha256:
            return Found(None, f"backup {backup_id} is not the one the operation used "
                               f"(sha256 {manifest.sha256[:16]}..., recorded "
                               f"{expected[:16]}...)")
        return _content(catalog, manifest)
    try:
        _size, actual = file_digest(catalog.data_path(manifest))
    except (DbGuardError, OSError) as exc:
        return Found(None, f"backup {backup_id} cannot be read ({exc})")
    expected = sha256 or manifest.sha256
    if actual != expected:
        return Found(None, f"backup {backup_id}'s file changed since the operation used it "
                           f"(sha256 {actual[:16]}..., recorded {expected[:16]}...)")
    return _content(catalog, manifest)


def _content(catalog: Catalog, manifest: Manifest) -> Found:
    """The content digest of backup *manifest* (its chunks are checked as they are read)."""
    try:
        with opened_backup(catalog, manifest) as plain:
            return Found(_digest(plain, "ro", 30.0))
    except (DbGuardError, OSError, sqlite3.DatabaseError) as exc:
        return Found(None, f"backup {manifest.id} cannot be read ({exc})")


def _digest(path: Path, mode: str, busy_timeout: float) -> str:
    conn = sqlite3.connect(sqlite_uri(path, mode), uri=True, timeout=busy_timeout,
                           isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: a bot committing meanwhile is not half seen
        try:
            return content_digest(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    finally:
        conn.close()
