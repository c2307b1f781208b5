"""Server backups into the catalog: the dump streamed in, hashed, verified, then named.

Same shape as a SQLite backup (see :mod:`dbguard_plugin.engines.backup`): the dump goes
to a ``.tmp-`` name in the catalog (0600), is checked with the server's own tool,
fsynced, and renamed into place; the manifest comes last. Nothing about the connection
but the redacted URL is ever written.

With ``storage = "repository"`` the checked dump is not named but cut into
content-defined chunks in the catalog's repository (catalog/repository.py), then
deleted. It is dumped uncompressed for that (pg_dump ``--compress=0``, no stream
compression for mariadb-dump): a dump compressed as a whole changes from its first
changed row to its end, and would share almost no chunk with the one before it; the
repository compresses each new chunk itself, with the ``compression`` setting.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbguard_plugin.catalog import TMP_PREFIX, Catalog, data_file
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import CDC_AVERAGE, Repository
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.backup import (
    BackupError,
    BackupSettings,
    Progress,
    Request,
    checked_settings,
    new_backup,
    new_manifest,
)
from dbguard_plugin.engines.server.dialect import Dialect, DumpResult
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError
from dbguard_plugin.files import open_private
from dbguard_plugin.location import DatabaseLocation

#: Called with the dump tool's pid as soon as it runs (tests read its argv from /proc).
on_dump_started: Callable[[int], None] | None = None


def create_backup(request: Request, catalog: Catalog, settings: BackupSettings | None = None,
                  progress: Progress | None = None) -> Manifest:
    """A consistent, verified dump of the server database the *request* names into
    *catalog*."""
    location = request.location
    settings = checked_settings(request.reason, settings)
    dialect = dialect_for(location)
    started, clock = time.time(), time.monotonic()
    with new_backup(catalog, request.reason, started) as backup_id:
        tmp = catalog.directory / f"{TMP_PREFIX}{backup_id}.dump"
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            result = _dump(dialect, fd, settings, progress)
            reach("server-backup:dumped")
            manifest = _manifest(request, backup_id, started, dialect.params.kind, result)
            _check(dialect, tmp, manifest, location)
            reach("server-backup:checked")
            if settings.storage == "repository":
                fields = _chunked(catalog, tmp, settings.compression, progress)
            else:
                catalog.place(tmp, manifest.file)
                fields = {}
            manifest = Manifest.from_dict(
                {**manifest.as_dict(), **fields,
                 "duration_s": round(time.monotonic() - clock, 3)})
            catalog.write_manifest(manifest)
            reach("server-backup:manifested")
            return manifest
        except (ConfigError, VerificationError):
            raise
        except DbGuardError as exc:  # the server or its tool refused: say which, no secret
            text = str(exc).removeprefix(f"{location.redacted}: ")
            raise BackupError(f"{location.redacted}: backup with the server's dump tool "
                              f"failed: {text}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _dump(dialect: Dialect, fd: int, settings: BackupSettings,
          progress: Progress | None) -> DumpResult:
    """The dump into *fd*, fsynced when it is to be the data file; *fd* is closed
    whatever happens. A dump for the repository is plain (see the module docstring)."""
    chunked = settings.storage == "repository"
    try:
        result = dialect.dump(fd, "none" if chunked else settings.compression, progress,
                              on_dump_started, plain=chunked)
        if not chunked:  # a dump for the repository is deleted once its chunks are durable
            os.fsync(fd)
        return result
    finally:
        os.close(fd)


def _chunked(catalog: Catalog, tmp: Path, compression: str,
             progress: Progress | None) -> dict[str, Any]:
    """Store the checked dump *tmp* in the repository (content-defined chunks, each new
    one compressed with *compression*), durably, then delete it: the manifest fields
    that make the backup its chunks. Runs under the catalog lock (new_backup's), so no
    collection can take a chunk before the manifest names it."""
    repository = Repository.of(catalog.directory)
    stored = repository.store(tmp, compression, progress, content_defined=True)
    reach("server-backup:chunked")
    os.unlink(tmp)
    return {"storage": "repository", "file": "", "size": stored.size,
            "sha256": stored.chunk_list, "compression": compression,
            "chunk_list": stored.chunk_list, "chunk_count": stored.chunk_count,
            "chunk_size": CDC_AVERAGE, "added": stored.added}


def _manifest(request: Request, backup_id: str, started: float, kind: str,
              result: DumpResult) -> Manifest:
    return new_manifest(
        request, backup_id, started,
        file=data_file(backup_id, kind, result.compression),
        size=result.digests.size,
        sha256=result.digests.sha256,
        compression=result.compression,
        raw_size=result.digests.raw_size,
        raw_sha256=result.digests.raw_sha256,
        backend=kind,
        schema_fingerprint=result.schema_fingerprint,
        tables=result.tables,
        server_version=result.server_version,
        check=result.check,
    )


def _check(dialect: Dialect, tmp: Path, manifest: Manifest,
           location: DatabaseLocation) -> None:
    problems = dialect.check_new(tmp, manifest)
    if problems:
        raise VerificationError(f"backup of {location.redacted} failed its check: "
                                + "; ".join(problems))
