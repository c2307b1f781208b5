"""Verified hot backups of a live SQLite database.

The copy is taken inside ONE read transaction on the source: the snapshot is fixed when
the transaction starts, so writers never restart it (a stepped backup without that
transaction restarts on every write and never finishes under a live bot) and in WAL mode
they are never blocked. By default the files themselves are copied under that snapshot
(snapshot.py); SQLite's backup API, several times slower, is the fallback. The copy goes
to a ``.tmp-`` name in the catalog, is checked, fsynced and hashed, and only then renamed
into place; its manifest comes last (docs/backups.rst says why each step is there).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbguard_plugin.catalog import TMP_PREFIX, Catalog, data_file
from dbguard_plugin.catalog.codecs import (
    CHUNK,
    SUFFIXES,
    compressing,
    file_digest,
)
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Repository, Stored
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.backup import (
    BackupError,
    BackupSettings,
    BackupUnsupported,
    NothingToBackUp,
    Progress,
    Request,
    checked_settings,
    new_backup,
    new_manifest,
)
from dbguard_plugin.engines.sqlite import snapshot
from dbguard_plugin.engines.sqlite.facts import SqliteFacts, check, read_facts
from dbguard_plugin.engines.sqlite.stored import SQLITE_MAGIC, opened_copy
from dbguard_plugin.errors import UnsafePathError, VerificationError
from dbguard_plugin.files import NO_ROOM, datasync, open_private
from dbguard_plugin.location import DatabaseLocation, hard_link_problem

__all__ = [
    "BackupError", "BackupSettings", "BackupUnsupported", "NothingToBackUp", "Progress",
    "check_source", "create_backup", "file_digest", "opened_copy", "sqlite_uri",
]

log = logging.getLogger(__name__)

_FLUSH_BYTES = 8 << 20


def check_source(location: DatabaseLocation) -> Path:
    """The SQLite file to back up; raises NothingToBackUp when there is none."""
    source = location.sqlite_path
    if source is None:
        raise BackupUnsupported(
            f"{location.redacted}: backups of {location.backend} databases are not "
            "supported by this version; back up with the server's own dump tool"
        )
    if not source.is_file():
        raise NothingToBackUp(f"{source}: no database file to back up; check --db / db_url")
    if _empty(source):
        raise NothingToBackUp(f"{source}: the database is empty (0 bytes: created, nothing "
                              "written yet); there is nothing that could be lost")
    linked = hard_link_problem(location)
    if linked is not None:  # the copy would read this name's WAL, not the bot's
        raise UnsafePathError(linked)
    return source


def _empty(source: Path) -> bool:
    """A 0-byte file is a valid, empty SQLite database, unless its first pages are still
    only in its WAL (a new WAL database before its first checkpoint)."""
    try:
        return source.stat().st_size == 0 and os.stat(f"{source}-wal").st_size == 0
    except FileNotFoundError:
        return source.stat().st_size == 0


def sqlite_uri(path: Path, mode: str) -> str:
    """A URI that opens *path* without creating it (mode ro or rw)."""
    return f"file:{urllib.parse.quote(str(path))}?mode={mode}"


def create_backup(
    location: DatabaseLocation,
    catalog: Catalog,
    reason: str,
    *,
    settings: BackupSettings | None = None,
    profile: str = "",
    trading_state: dict[str, Any] | None = None,
    progress: Progress | None = None,
    note: str = "",
    keep_damaged: bool = False,
) -> Manifest:
    """Take a consistent, verified backup of the live database into *catalog*.

    With *keep_damaged* a copy that fails its check is kept anyway, as found, with
    ``verified: false`` (a restore over a damaged database keeps the damaged one this way).
    """
    settings = checked_settings(reason, settings)
    source = check_source(location)
    request = Request(location, reason, profile, trading_state, note)
    started, clock = time.time(), time.monotonic()
    with new_backup(catalog, reason, started, lambda: reach("backup:locked")) as backup_id:
        raw_tmp = catalog.directory / f"{TMP_PREFIX}{backup_id}.sqlite"
        leftovers = [raw_tmp]
        try:
            copy = _checked_copy(source, raw_tmp, catalog, location, settings,
                                 progress, keep_damaged)
            if copy.stored is not None:
                stored, fields = _from_repository(raw_tmp, catalog, copy.stored)
            else:
                stored = _store(raw_tmp, backup_id, catalog, settings.compression,
                                progress, copy, leftovers)
                fields = {}
            manifest = _manifest(request, backup_id, started, copy, stored,
                                 compression=settings.compression,
                                 duration_s=round(time.monotonic() - clock, 3), **fields)
            catalog.write_manifest(manifest)
            reach("backup:manifested")
            return manifest
        except BaseException:
            for path in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise


@dataclass(frozen=True)
class _Copy:
    """A checked copy of the database: its facts, how it was taken, what is wrong."""

    facts: SqliteFacts
    method: str
    #: "" for a sound copy; what quick_check found in one kept with keep_damaged
    damage: str
    raw_size: int
    raw_sha256: str
    #: The copy's chunks, when they went into the repository beside the check.
    stored: Stored | None = None


@dataclass(frozen=True)
class _Stored:
    """The backup's data file in the catalog, under its final name."""

    file: str
    size: int
    sha256: str


def _checked_copy(
    source: Path, raw_tmp: Path, catalog: Catalog, location: DatabaseLocation,
    settings: BackupSettings, progress: Progress | None, keep_damaged: bool,
) -> _Copy:
    """Copy *source* to *raw_tmp*, then check the copy and, beside the check, flush and
    hash it (a data file) or store its chunks (the repository)."""
    journal_mode, method = _copy_snapshot(source, raw_tmp, catalog.directory, settings,
                                          progress)
    reach("backup:copied")
    # Both read the copy from the page cache; SQLite and hashlib release the GIL, so
    # the check and the flush-and-hash (or the chunking) overlap.
    with ThreadPoolExecutor(max_workers=1) as pool:
        if settings.storage == "repository":
            repository = Repository.of(catalog.directory)
            chunked = pool.submit(repository.store, raw_tmp, settings.compression)
            facts, damage = _check_copy(raw_tmp, journal_mode, location, keep_damaged)
            reach("backup:checked")
            try:
                stored = chunked.result()
            except OSError as exc:
                raise BackupError(_store_failed(source, exc)) from None
            return _Copy(facts, method, damage, stored.raw_size, "", stored)
        digest = pool.submit(_flush_and_digest, raw_tmp)
        facts, damage = _check_copy(raw_tmp, journal_mode, location, keep_damaged)
        reach("backup:checked")
        raw_size, raw_sha = digest.result()
    reach("backup:hashed")
    return _Copy(facts, method, damage, raw_size, raw_sha)


def _store_failed(source: Path, exc: OSError) -> str:
    """One line for a repository write that failed: the file, why, and what to do."""
    what = f"{source}: backup failed: {exc.filename}: {exc.strerror or exc}"
    if exc.errno in NO_ROOM:
        return (f"{what}; the backups before it are intact (the next prune removes what "
                "this one wrote): free space or set backup_dir to a larger disk")
    return what


def _store(raw_tmp: Path, backup_id: str, catalog: Catalog, compression: str,
           progress: Progress | None, copy: _Copy, leftovers: list[Path]) -> _Stored:
    """Compress the checked copy if asked, and give it its final name in the catalog.
    Every scratch file it makes is added to *leftovers* (removed if anything fails)."""
    stored_tmp = raw_tmp
    size, sha = copy.raw_size, copy.raw_sha256
    if compression != "none":
        stored_tmp = raw_tmp.with_name(raw_tmp.name + SUFFIXES[compression])
        leftovers.append(stored_tmp)
        size, sha = _compress(raw_tmp, stored_tmp, compression, progress)
        reach("backup:compressed")
        os.unlink(raw_tmp)
    final_name = data_file(backup_id, "sqlite", compression)
    catalog.place(stored_tmp, final_name)
    reach("backup:renamed")
    return _Stored(final_name, size, sha)


def _from_repository(raw_tmp: Path, catalog: Catalog,
                     stored: Stored) -> tuple[_Stored, dict[str, Any]]:
    """The copy's chunks are in the repository (durable): drop the copy; the manifest
    written next is what makes the backup exist."""
    reach("backup:chunked")
    os.unlink(raw_tmp)
    return (_Stored("", stored.size, stored.chunk_list),
            {"storage": "repository", "chunk_list": stored.chunk_list,
             "chunk_count": stored.chunk_count, "added": stored.added,
             "chunk_size": Repository.of(catalog.directory).chunk_size})


def _manifest(request: Request, backup_id: str, started: float, copy: _Copy,
              stored: _Stored, **fields: Any) -> Manifest:
    facts = copy.facts
    note = request.note
    return new_manifest(
        request, backup_id, started,
        file=stored.file,
        size=stored.size,
        sha256=stored.sha256,
        raw_size=copy.raw_size,
        raw_sha256=copy.raw_sha256,
        backend="sqlite",
        page_size=facts.page_size,
        page_count=facts.page_count,
        journal_mode=facts.journal_mode,
        user_version=facts.user_version,
        schema_fingerprint=facts.schema_fingerprint,
        tables=facts.tables,
        sqlite_version=sqlite3.sqlite_version,
        copy_method=copy.method,
        verified=not copy.damage,
        note=f"{note} (damaged: {copy.damage})".strip() if copy.damage else note,
        **fields,
    )


def _copy_snapshot(
    source: Path, dest: Path, directory: Path, settings: BackupSettings,
    progress: Progress | None,
) -> tuple[str, str]:
    """Copy one consistent snapshot of *source* to *dest*: (journal mode, copy method)."""
    os.close(open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # 0600 before SQLite
    if settings.method == "snapshot":
        mode = _copy_in_child(source, dest, settings, progress)
        if mode is not None:
            return mode, "snapshot"
        os.truncate(dest, 0)
    return _copy_with_backup_api(source, dest, directory, settings, progress), "backup-api"


def _copy_in_child(
    source: Path, dest: Path, settings: BackupSettings, progress: Progress | None
) -> str | None:
    """The file-level snapshot copy (see snapshot.py); None when the backup API must do it."""
    script = Path(snapshot.__file__)
    if not script.is_file():
        return None
    cmd = [sys.executable, "-I", "-S", str(script), sqlite_uri(source, "rw"), str(source),
           str(dest), repr(settings.busy_timeout), str(max(1, settings.step_pages))]
    if settings.storage == "repository":
        cmd.append("scratch")  # only read, into fsynced packs, then deleted
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
    except OSError as exc:
        log.info("snapshot copy unavailable (%s); using the backup API", exc)
        return None
    outcome: list[str] = []
    with proc:
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            assert proc.stderr is not None
            for line in proc.stdout:
                kind, *fields = line.split(" ", 1)
                if kind == "progress":
                    reach("backup:copying")
                    done, total = (int(n) for n in fields[0].split())
                    if progress is not None:
                        progress(done, total)
                    proc.stdin.write("go\n")
                else:
                    outcome = [kind.strip(), *(f.strip() for f in fields)]
            errors = proc.stderr.read().strip()
            code = proc.wait()
        except BaseException:
            proc.kill()
            raise
    if code == 0 and outcome[:1] == ["done"]:
        return outcome[1]
    if outcome[:1] == ["unavailable"]:
        log.info("snapshot copy unavailable (%s); using the backup API", outcome[1:])
        return None
    if outcome[:1] == ["nospace"]:
        need, free = (int(n) for n in outcome[1].split())
        raise BackupError(_no_space(dest.parent, source, need, free))
    # One line for the operator: the child's last line (a traceback's last line too).
    last = errors.splitlines()[-1] if errors else f"copy process exited with {code}"
    raise BackupError(f"{source}: backup failed: {last}")


def _no_space(directory: Path, source: Path, size: int, free: int) -> str:
    need = snapshot.room_needed(size)
    return (f"{directory}: not enough free space for a backup of {source} "
            f"({need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free); a backup needs "
            f"the database's size ({size / 2**20:.1f} MiB) plus 1/16 plus 16 MiB: "
            "free space or set backup_dir to a larger disk")


def _copy_with_backup_api(
    source: Path, dest: Path, directory: Path, settings: BackupSettings,
    progress: Progress | None,
) -> str:
    """SQLite's backup API stepped inside one read transaction (the portable fallback)."""
    src = sqlite3.connect(
        sqlite_uri(source, "rw"), uri=True, timeout=settings.busy_timeout, isolation_level=None
    )
    try:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
        journal_mode = str(src.execute("PRAGMA journal_mode").fetchone()[0])
        page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(src.execute("PRAGMA page_count").fetchone()[0])
        need = page_size * page_count
        free = shutil.disk_usage(directory).free
        if free < snapshot.room_needed(need):
            raise BackupError(_no_space(directory, source, need, free))
        # Flush the copy as it grows: one fsync of the whole copy at the end made the
        # bot's own commit fsyncs queue behind it for hundreds of milliseconds. This
        # descriptor is closed only after SQLite's own (a close would drop its locks).
        flush_fd = os.open(dest, os.O_RDWR)
        dst = sqlite3.connect(str(dest), isolation_level=None)
        try:
            dst.execute("PRAGMA journal_mode=OFF")  # a scratch copy: we verify it ourselves
            dst.execute("PRAGMA synchronous=OFF")
            flushed = [0]
            every = max(1, _FLUSH_BYTES // page_size)

            def step(_status: int, remaining: int, total: int) -> None:
                reach("backup:copying")
                done = total - remaining
                if done - flushed[0] >= every:
                    datasync(flush_fd)
                    flushed[0] = done
                if progress is not None:
                    progress(done, total)

            src.backup(dst, pages=max(1, settings.step_pages), progress=step, sleep=0)
            src.execute("COMMIT")
            # The copied header keeps the source's WAL flag; a backup must be one file.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            os.close(flush_fd)
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: backup failed: {exc}") from None
    finally:
        src.close()
    return journal_mode


def _check_copy(
    path: Path, journal_mode: str, location: DatabaseLocation, keep_damaged: bool = False
) -> tuple[SqliteFacts, str]:
    """The copy's facts, and "" or (with *keep_damaged*) what is wrong with it."""
    with open(path, "rb") as fh:
        if fh.read(16) != SQLITE_MAGIC:
            raise VerificationError(f"{path}: the copy is not a SQLite database")
    conn = sqlite3.connect(sqlite_uri(path, "ro"), uri=True)
    try:
        try:
            problems = check(conn, "quick_check")
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems:
            damage = "; ".join(problems[:5])
            if not keep_damaged:
                raise VerificationError(
                    f"backup of {location.redacted} failed quick_check: {damage}"
                )
            try:
                return read_facts(conn, journal_mode), damage
            except sqlite3.DatabaseError:
                return SqliteFacts(0, 0, journal_mode, 0, "", {}), damage
        return read_facts(conn, journal_mode), ""
    finally:
        conn.close()


def _flush_and_digest(path: Path) -> tuple[int, str]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return file_digest(path)


def _compress(raw: Path, dest: Path, method: str,
              progress: Progress | None = None) -> tuple[int, str]:
    """Compress *raw* into *dest* (0600), fsync it; return its size and sha256. Progress
    is reported in bytes of *raw*: compression takes most of a compressed backup."""
    total = raw.stat().st_size
    done = 0
    fd = open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as out, open(raw, "rb") as src:
        with compressing(out, method) as writer:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    return file_digest(dest)
