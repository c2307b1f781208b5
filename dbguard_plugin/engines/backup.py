"""What every engine's backup shares: its settings and errors, and its manifest.

An engine copies (SQLite) or dumps (a server) the database to a ``.tmp-`` name in the
catalog, checks it, and names it; the request checks before, the catalog lock and id
around, and the manifest after are the same for both, and live here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.codecs import COMPRESSIONS
from dbguard_plugin.catalog.manifest import REASONS, Manifest
from dbguard_plugin.errors import ConfigError, DbGuardError
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.version import __version__

#: progress(done, total): pages of a SQLite copy, bytes of a compression; a dump's
#: total is 0 (its size is not known in advance).
Progress = Callable[[int, int], None]


class BackupError(DbGuardError):
    """A backup could not be made; the message says why and what to do."""


class NothingToBackUp(BackupError):
    """The database file does not exist (yet): there is nothing that could be lost."""


class BackupUnsupported(NothingToBackUp):
    """This kind of database cannot be backed up by this version."""


@dataclass(frozen=True)
class BackupSettings:
    compression: str = "none"
    #: Pages per backup step: bounds memory and sets how often progress is reported.
    step_pages: int = 2048
    #: "snapshot" copies the files under a pinned read snapshot (snapshot.py) and falls
    #: back to "backup-api", SQLite's page-by-page backup, where that cannot be done.
    method: str = "snapshot"
    busy_timeout: float = 30.0
    #: "files": one data file per backup; "repository": chunks in the deduplicated
    #: repository (catalog/repository.py), each stored once.
    storage: str = "files"


def checked_settings(reason: str, settings: BackupSettings | None) -> BackupSettings:
    """*settings* (or the defaults) once *reason* and the compression are known ones."""
    settings = settings or BackupSettings()
    if reason not in REASONS:
        raise ConfigError(f"backup reason {reason!r} is not one of {', '.join(REASONS)}")
    if settings.compression not in COMPRESSIONS:
        raise ConfigError(f"compression {settings.compression!r} is not one of "
                          f"{', '.join(COMPRESSIONS)}")
    return settings


@contextlib.contextmanager
def new_backup(catalog: Catalog, reason: str, started: float,
               locked: Callable[[], None] | None = None) -> Iterator[str]:
    """The new backup's id, under the catalog lock, after leftovers are removed;
    *locked* runs once the lock is held (the SQLite engine's crash point)."""
    with catalog.locked():
        catalog.cleanup()
        if locked is not None:
            locked()
        yield catalog.new_id(reason, started)


@dataclass(frozen=True)
class Request:
    """Who asked for a backup and why: the manifest fields no engine decides."""

    location: DatabaseLocation
    reason: str
    profile: str = ""
    trading_state: dict[str, Any] | None = None
    note: str = ""


def new_manifest(request: Request, backup_id: str, started: float,
                 **engine_fields: Any) -> Manifest:
    """The manifest of backup *backup_id*: the request's fields and the engine's."""
    return Manifest(
        id=backup_id,
        created=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
        + f".{int(started * 1000) % 1000:03d}Z",
        created_ts=started,
        reason=request.reason,
        source=request.location.redacted,
        dbguard_version=__version__,
        profile=request.profile,
        trading_state=request.trading_state or {},
        **{"note": request.note, **engine_fields},
    )
