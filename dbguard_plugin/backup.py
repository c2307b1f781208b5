"""Verified hot backups of a live SQLite database.

The copy is SQLite's backup API stepped inside ONE read transaction on the source: the
snapshot is fixed when the transaction starts, so writers never restart it (a stepped
backup without that transaction restarts on every write and never finishes under a live
bot) and in WAL mode they are never blocked. The copy goes to a ``.tmp-`` name in the
catalog, is checked, fsynced and hashed, and only then renamed into place; its manifest
comes last. See DESIGN.md, "SQLite facts".
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbguard_plugin import __version__
from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError
from dbguard_plugin.files import fsync_dir, open_private, replace, write_atomic
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.manifest import REASONS, Manifest
from dbguard_plugin.sqlite_facts import check, read_facts

SQLITE_MAGIC = b"SQLite format 3\x00"
CHUNK = 1 << 20
_FLUSH_BYTES = 8 << 20
COMPRESSIONS = ("none", "gzip", "zstd")
_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}

#: progress(done_pages, total_pages)
Progress = Callable[[int, int], None]


class BackupError(DbGuardError):
    """A backup could not be made; the message says why and what to do."""


class NothingToBackUp(BackupError):
    """The database file does not exist (yet): there is nothing that could be lost."""


class BackupUnsupported(NothingToBackUp):
    """This kind of database cannot be backed up by this version."""


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
    return source


def sqlite_uri(path: Path, mode: str) -> str:
    """A URI that opens *path* without creating it (mode ro or rw)."""
    return f"file:{urllib.parse.quote(str(path))}?mode={mode}"


@dataclass(frozen=True)
class BackupSettings:
    compression: str = "none"
    #: Pages per backup step: bounds memory and sets how often progress is reported.
    step_pages: int = 1024
    busy_timeout: float = 30.0


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
) -> Manifest:
    """Take a consistent, verified backup of the live database into *catalog*."""
    settings = settings or BackupSettings()
    if reason not in REASONS:
        raise ConfigError(f"backup reason {reason!r} is not one of {', '.join(REASONS)}")
    if settings.compression not in COMPRESSIONS:
        raise ConfigError(f"compression {settings.compression!r} is not one of "
                          f"{', '.join(COMPRESSIONS)}")
    source = check_source(location)
    started, clock = time.time(), time.monotonic()
    with catalog.locked():
        catalog.cleanup()
        reach("backup:locked")
        backup_id = catalog.new_id(reason, started)
        raw_tmp = catalog.directory / f"{TMP_PREFIX}{backup_id}.sqlite"
        leftovers = [raw_tmp]
        try:
            journal_mode = _copy_snapshot(source, raw_tmp, catalog.directory, settings, progress)
            reach("backup:copied")
            facts = _check_copy(raw_tmp, journal_mode, location)
            reach("backup:checked")
            _fsync_file(raw_tmp)
            raw_size, raw_sha = file_digest(raw_tmp)
            reach("backup:hashed")
            stored_tmp = raw_tmp
            size, sha = raw_size, raw_sha
            if settings.compression != "none":
                stored_tmp = raw_tmp.with_name(raw_tmp.name + _SUFFIX[settings.compression])
                leftovers.append(stored_tmp)
                size, sha = _compress(raw_tmp, stored_tmp, settings.compression)
                reach("backup:compressed")
                os.unlink(raw_tmp)
            final_name = f"{backup_id}.sqlite{_SUFFIX[settings.compression]}"
            replace(stored_tmp, catalog.directory / final_name)
            fsync_dir(catalog.directory)
            reach("backup:renamed")
            manifest = Manifest(
                id=backup_id,
                created=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
                + f".{int(started * 1000) % 1000:03d}Z",
                created_ts=started,
                reason=reason,
                file=final_name,
                size=size,
                sha256=sha,
                compression=settings.compression,
                raw_size=raw_size,
                raw_sha256=raw_sha,
                backend="sqlite",
                source=location.redacted,
                page_size=facts.page_size,
                page_count=facts.page_count,
                journal_mode=facts.journal_mode,
                user_version=facts.user_version,
                schema_fingerprint=facts.schema_fingerprint,
                tables=facts.tables,
                sqlite_version=sqlite3.sqlite_version,
                dbguard_version=__version__,
                profile=profile,
                trading_state=trading_state or {},
                duration_s=round(time.monotonic() - clock, 3),
                note=note,
            )
            write_atomic(catalog.manifest_path(backup_id), manifest.to_json(), fsync=True)
            reach("backup:manifested")
            return manifest
        except BaseException:
            for path in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            raise


def _copy_snapshot(
    source: Path, dest: Path, directory: Path, settings: BackupSettings,
    progress: Progress | None,
) -> str:
    """Copy one consistent snapshot of *source* to *dest*; return the source journal mode."""
    os.close(open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # 0600 before SQLite
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
        if free < need + (need >> 4) + (16 << 20):
            raise BackupError(
                f"{directory}: not enough free space for a backup of {source} "
                f"({need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free); "
                "free space or set backup_dir to a larger disk"
            )
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
                    _datasync(flush_fd)
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


def _datasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def _check_copy(path: Path, journal_mode: str, location: DatabaseLocation) -> Any:
    with open(path, "rb") as fh:
        if fh.read(16) != SQLITE_MAGIC:
            raise VerificationError(f"{path}: the copy is not a SQLite database")
    conn = sqlite3.connect(sqlite_uri(path, "ro"), uri=True)
    try:
        problems = check(conn, "quick_check")
        if problems:
            raise VerificationError(
                f"backup of {location.redacted} failed quick_check: {'; '.join(problems[:5])}"
            )
        return read_facts(conn, journal_mode)
    finally:
        conn.close()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of *path*, read in constant memory."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise ConfigError(
            "compression = 'zstd' needs the zstandard package: "
            "pip install 'dbguard-plugin[zstd]', or set compression to gzip or none"
        ) from None
    return zstandard


def _compress(raw: Path, dest: Path, method: str) -> tuple[int, str]:
    """Compress *raw* into *dest* (0600), fsync it; return its size and sha256."""
    fd = open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as out, open(raw, "rb") as src:
        writer: Any
        if method == "gzip":
            writer = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
        else:
            writer = _zstd().ZstdCompressor(level=3).stream_writer(out, closefd=False)
        with writer:
            while chunk := src.read(CHUNK):
                writer.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return file_digest(dest)


@contextlib.contextmanager
def opened_copy(stored: Path, compression: str, scratch_dir: Path) -> Iterator[Path]:
    """The plain SQLite file inside a stored backup: itself, or a decompressed scratch copy."""
    if compression == "none":
        yield stored
        return
    tmp = scratch_dir / f"{TMP_PREFIX}read-{os.getpid()}-{stored.name}.sqlite"
    # cleanup() spares .tmp-read-<pid>- files of live processes: a concurrent backup's
    # cleanup must not pull this copy from under a running verify or restore.
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb") as out, open(stored, "rb") as src:
            reader: Any
            if compression == "gzip":
                reader = gzip.GzipFile(fileobj=src, mode="rb")
            else:
                reader = _zstd().ZstdDecompressor().stream_reader(src)
            try:
                with reader:
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
            except (OSError, EOFError, ValueError) as exc:
                raise VerificationError(f"{stored}: cannot decompress ({exc})") from None
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
