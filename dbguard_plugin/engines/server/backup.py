"""Server backups into the catalog: the dump streamed in, hashed, verified, then named.

Same shape as a SQLite backup (see :mod:`dbguard_plugin.engines.backup`): the dump goes
to a ``.tmp-`` name in the catalog (0600), is checked with the server's own tool,
fsynced, and renamed into place; the manifest comes last. Nothing about the connection
but the redacted URL is ever written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from dbguard_plugin.catalog import TMP_PREFIX, Catalog, data_file
from dbguard_plugin.catalog.manifest import Manifest
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
            result = _dump(dialect, fd, settings.compression, progress)
            reach("server-backup:dumped")
            manifest = _manifest(request, backup_id, started, dialect.params.kind, result)
            _check(dialect, tmp, manifest, location)
            reach("server-backup:checked")
            catalog.place(tmp, manifest.file)
            manifest = Manifest.from_dict(
                {**manifest.as_dict(), "duration_s": round(time.monotonic() - clock, 3)})
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


def _dump(dialect: Dialect, fd: int, compression: str,
          progress: Progress | None) -> DumpResult:
    """The dump into *fd*, fsynced; *fd* is closed whatever happens."""
    try:
        result = dialect.dump(fd, compression, progress, on_dump_started)
        os.fsync(fd)
        return result
    finally:
        os.close(fd)


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
