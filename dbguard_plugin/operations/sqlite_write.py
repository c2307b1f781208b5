"""Writing a backup into a live SQLite database as one transaction, and checking what
was written: the step a restore, its undo and recovery's undo share (docs/restore.rst,
"Why the snapshot is written into the live database")."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.sqlite.backup import Progress, sqlite_uri
from dbguard_plugin.engines.sqlite.facts import check, row_counts, schema_fingerprint
from dbguard_plugin.engines.sqlite.stored import opened_backup
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.operations.replacement import RestoreError

#: sqlite3_backup_step's answers while another connection holds a lock it needs
_BUSY_OR_LOCKED = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: How long a backup step waits before it asks again: sleeping, never spinning.
_BUSY_SLEEP = 0.05


class LiveDatabaseBusy(RestoreError):
    """Another connection kept the live database locked past busy_timeout: the copy's
    transaction was rolled back, so nothing was written."""


def schema_version(live: Path) -> int:
    if not live.exists():
        return 0
    # read-write: a hot journal left by a killed copy must be rolled back on this read
    conn = sqlite3.connect(sqlite_uri(live, "rw"), uri=True, timeout=30)
    try:
        return int(conn.execute("PRAGMA schema_version").fetchone()[0])
    finally:
        conn.close()


def write_into(live: Path, plain: Path, busy_timeout: float,
               progress: Progress | None = None,
               step_pages: int = 1024) -> dict[str, int] | None:
    """Write the SQLite file *plain* into the live database as ONE transaction.

    The backup API keeps its write transaction on the destination open across steps and
    commits only at the end, so a crash at any step leaves the old database (SQLite
    rolls the hot journal back, or ignores uncommitted WAL frames). Connections the bot
    keeps open see the new content at their next transaction.

    Returns the row counts of exactly what was written, or None when another connection
    committed in between (a bot with no order in flight may keep writing; its rows are
    then legitimately on top of the restored ones, and counts prove nothing).
    """
    src = sqlite3.connect(sqlite_uri(plain, "ro"), uri=True)
    mode = "rw" if live.exists() else "rwc"
    dst = sqlite3.connect(sqlite_uri(live, mode), uri=True, timeout=busy_timeout,
                          isolation_level=None)
    waiting_since: list[float] = []
    try:
        def step(status: int, remaining: int, total: int) -> None:
            if status in _BUSY_OR_LOCKED:
                _wait_or_give_up(live, busy_timeout, waiting_since)
                return
            waiting_since.clear()
            reach("restore:copying")
            if progress is not None:
                progress(total - remaining, total)

        # data_version changes only for other connections' commits (not for this one's
        # backup), and inside a read transaction it is that snapshot's: equal values
        # mean the counts below are of exactly the pages the backup wrote.
        before = dst.execute("PRAGMA data_version").fetchone()[0]
        src.backup(dst, pages=step_pages, progress=step, sleep=_BUSY_SLEEP)
        dst.execute("BEGIN")
        dst.execute("SELECT count(*) FROM sqlite_master").fetchone()
        undisturbed = dst.execute("PRAGMA data_version").fetchone()[0] == before
        counts = row_counts(dst) if undisturbed else None
        dst.execute("COMMIT")
        # Keep the WAL from holding a whole second copy; PASSIVE never waits on readers.
        dst.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return counts
    finally:
        dst.close()
        src.close()


def _wait_or_give_up(live: Path, busy_timeout: float, since: list[float]) -> None:
    """A backup step met another connection's lock (a rollback-journal reader keeps the
    copy from committing): the backup API sleeps between steps; past busy_timeout the
    copy is abandoned, and SQLite rolls its transaction back."""
    now = time.monotonic()
    if not since:
        since.append(now)
    elif now - since[0] >= busy_timeout:
        raise LiveDatabaseBusy(
            f"{live} stayed locked by another connection (a reader's or writer's open "
            f"transaction) for {busy_timeout:g} s, the busy_timeout; nothing was written. "
            f"Try again when it ends ('fuser {live}' names the processes that have it open)"
        )


def post_check(live: Path, manifest: Manifest, level: str,
               counts: dict[str, int] | None = None) -> None:
    """The written database: *level* check, the backup's schema, and (when *counts*, the
    row counts write_into saw right after its commit, are given) the backup's row counts."""
    conn = sqlite3.connect(sqlite_uri(live, "ro"), uri=True, timeout=30)
    try:
        problems = check(conn, level if level == "integrity_check" else "quick_check")
        if problems:
            raise VerificationError(f"{live}: {'; '.join(problems[:5])}")
        if manifest.schema_fingerprint and schema_fingerprint(conn) != manifest.schema_fingerprint:
            raise VerificationError(f"{live}: schema differs from backup {manifest.id}")
    finally:
        conn.close()
    if counts is not None and manifest.tables and counts != manifest.tables:
        raise VerificationError(f"{live}: row counts differ from backup {manifest.id}")


def put_back(catalog: Catalog, safety: Manifest, live: Path, busy_timeout: float) -> None:
    """Write safety backup *safety* into *live* the same way, and check it."""
    with opened_backup(catalog, safety) as plain:
        counts = write_into(live, plain, busy_timeout)
    post_check(live, safety, "quick_check", counts)
