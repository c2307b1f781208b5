"""Server backups into the catalog: the dump streamed in, hashed, verified, then named.

Same shape as a SQLite backup (see :mod:`dbguard_plugin.engines.sqlite.backup`): the dump goes to a
``.tmp-`` name in the catalog (0600), is checked with the server's own tool, fsynced,
and renamed into place; the manifest comes last. Nothing about the connection but the
redacted URL is ever written.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.catalog.manifest import REASONS, Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.server import dialect_for
from dbguard_plugin.engines.server.tools import Progress
from dbguard_plugin.engines.sqlite.backup import COMPRESSIONS, BackupError, BackupSettings
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError
from dbguard_plugin.files import fsync_dir, open_private, replace, write_atomic
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.version import __version__

_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}

#: Called with the dump tool's pid as soon as it runs (tests read its argv from /proc).
on_dump_started: Callable[[int], None] | None = None


def data_suffix(backend: str, compression: str) -> str:
    """The catalog file suffix of a server backup (the catalog names files by it)."""
    base = ".pgdump" if backend == "postgresql" else ".sql"
    return base + _SUFFIX.get(compression, "")


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
    """A consistent, verified dump of the server database *location* into *catalog*."""
    settings = settings or BackupSettings()
    if reason not in REASONS:
        raise ConfigError(f"backup reason {reason!r} is not one of {', '.join(REASONS)}")
    if settings.compression not in COMPRESSIONS:
        raise ConfigError(f"compression {settings.compression!r} is not one of "
                          f"{', '.join(COMPRESSIONS)}")
    dialect = dialect_for(location)
    started, clock = time.time(), time.monotonic()
    with catalog.locked():
        catalog.cleanup()
        backup_id = catalog.new_id(reason, started)
        tmp = catalog.directory / f"{TMP_PREFIX}{backup_id}.dump"
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            try:
                result = dialect.dump(fd, settings.compression, progress, on_dump_started)
                os.fsync(fd)
            finally:
                os.close(fd)
            reach("server-backup:dumped")
            kind = dialect.params.kind
            manifest = Manifest(
                id=backup_id,
                created=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
                + f".{int(started * 1000) % 1000:03d}Z",
                created_ts=started,
                reason=reason,
                file=backup_id + data_suffix(kind, result.compression),
                size=result.digests.size,
                sha256=result.digests.sha256,
                compression=result.compression,
                raw_size=result.digests.raw_size,
                raw_sha256=result.digests.raw_sha256,
                backend=kind,
                source=location.redacted,
                schema_fingerprint=result.schema_fingerprint,
                tables=result.tables,
                server_version=result.server_version,
                dbguard_version=__version__,
                profile=profile,
                trading_state=trading_state or {},
                check=result.check,
                note=note,
            )
            problems = dialect.check_new(tmp, manifest)
            if problems:
                raise VerificationError(f"backup of {location.redacted} failed its check: "
                                        + "; ".join(problems))
            reach("server-backup:checked")
            replace(tmp, catalog.directory / manifest.file)
            fsync_dir(catalog.directory)
            manifest = Manifest.from_dict(
                {**manifest.as_dict(), "duration_s": round(time.monotonic() - clock, 3)})
            write_atomic(catalog.manifest_path(backup_id), manifest.to_json(), fsync=True)
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
