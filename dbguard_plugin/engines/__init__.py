"""How one kind of database is backed up, verified, previewed and leased.

``engines.sqlite`` for the embedded default, ``engines.server`` for PostgreSQL and
MariaDB. An engine imports catalog and the shared values, never the guard. The rest of
dbguard chooses an engine only here: every entry point below takes any database and
imports the server engine only for a server one (it loads SQLAlchemy and a driver,
about 0.4 s that a SQLite bot never needs), and the SQLite engine's backup, verify and
preview modules only when a backup is made or read: ``dbguard status`` and ``check``,
which every operator and cron job runs, never need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.lease import Lease
from dbguard_plugin.engines.preview import (
    DEFAULT_OPEN_ORDERS,
    DEFAULT_OPEN_TRADES,
    OpenRule,
    Preview,
)
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.location import DatabaseLocation

if TYPE_CHECKING:
    from dbguard_plugin.engines.backup import BackupSettings, Progress
    from dbguard_plugin.engines.verify import VerifyResult

__all__ = [
    "check_source", "create_backup", "is_server", "open_lease", "preview_restore",
    "server_backup", "server_preview", "verified_archive", "verified_copy", "verify_backup",
    "verify_or_refuse",
]


def is_server(location: DatabaseLocation) -> bool:
    """Whether *location* is a PostgreSQL or MariaDB/MySQL database (the server engine's)."""
    if location.sqlite_path is not None:
        return False
    # why here: naming a server's kind is needed only for a database that is not a file
    from dbguard_plugin.engines.server.params import server_kind

    return server_kind(location) is not None


def _is_server_backup(manifest: Manifest) -> bool:
    return manifest.backend in ("postgresql", "mariadb")


# -- the lease -------------------------------------------------------------------------


def open_lease(location: DatabaseLocation) -> Lease:
    """The lease of *location*: lock files for SQLite, the server's own locks otherwise."""
    if location.sqlite_path is None:
        # why here: the server engine (SQLAlchemy, drivers) only for a server database
        from dbguard_plugin.engines.server.lease import ServerLease

        return ServerLease(location)
    return Lease(location.state_dir)


# -- backups ---------------------------------------------------------------------------


def check_source(location: DatabaseLocation) -> None:
    """Refuse early when there is nothing to back up (NothingToBackUp) or the database
    cannot be backed up (BackupUnsupported); a server is asked only by its backup."""
    if not is_server(location):
        # why here: the SQLite engine's backup modules, only when a backup is made
        from dbguard_plugin.engines.sqlite.backup import check_source as check_file

        check_file(location)


def server_backup(
    location: DatabaseLocation, catalog: Catalog, reason: str, *,
    settings: BackupSettings | None = None, profile: str = "",
    trading_state: dict[str, Any] | None = None, progress: Progress | None = None,
    note: str = "",
) -> Manifest:
    """A consistent, verified dump of the server database *location* into *catalog*."""
    # why here: the server engine (SQLAlchemy, drivers) only for a server database
    from dbguard_plugin.engines.backup import Request
    from dbguard_plugin.engines.server.backup import create_backup as dump_into

    request = Request(location, reason, profile, trading_state, note)
    return dump_into(request, catalog, settings, progress)


def create_backup(
    location: DatabaseLocation, catalog: Catalog, reason: str, *,
    settings: BackupSettings | None = None, profile: str = "",
    trading_state: dict[str, Any] | None = None, progress: Progress | None = None,
    note: str = "", keep_damaged: bool = False,
) -> Manifest:
    """A verified backup of *location* into *catalog*, by its engine. *keep_damaged*
    (keep a SQLite copy that fails its check, unverified) has no server counterpart."""
    common: dict[str, Any] = {"settings": settings, "profile": profile, "note": note,
                              "trading_state": trading_state, "progress": progress}
    if is_server(location):
        return server_backup(location, catalog, reason, **common)
    # why here: as in check_source
    from dbguard_plugin.engines.sqlite.backup import create_backup as copy_into

    return copy_into(location, catalog, reason, keep_damaged=keep_damaged, **common)


# -- verification ----------------------------------------------------------------------


def verify_backup(
    catalog: Catalog, manifest: Manifest, level: str = "integrity_check"
) -> VerifyResult:
    """Recompute the sha256, then run *level* on the SQLite file (a server dump: its
    tool's own check); never raises for a bad file. A SQLite backup is read once."""
    if not _is_server_backup(manifest):
        # why here: the SQLite engine's verify modules, only when a backup is read
        from dbguard_plugin.engines.sqlite.verify import checked_copy

        with checked_copy(catalog, manifest, level) as (result, _plain):
            return result
    # why here: the server engine (SQLAlchemy, drivers) only for a server backup
    from dbguard_plugin.engines.server.verify import checked_archive

    with checked_archive(catalog, manifest) as (result, _archive):
        return result


def verify_or_refuse(
    catalog: Catalog, manifest: Manifest, level: str = "integrity_check", *,
    record: bool = True, nothing_was: str = "changed",
) -> None:
    """Verify a backup before it replaces (or is copied over) anything. When it fails,
    mark it unverified in *catalog* (with *record*) and raise VerificationError:
    "backup ID failed verification; nothing was *nothing_was*: problems"."""
    result = verify_backup(catalog, manifest, level)
    if not result.ok:
        raise _refusal(catalog, result, record, nothing_was)


@contextlib.contextmanager
def verified_copy(
    catalog: Catalog, manifest: Manifest, level: str = "integrity_check", *,
    record: bool = True, nothing_was: str = "changed",
) -> Iterator[Path]:
    """The SQLite backup *manifest* verified (or refused) as by verify_or_refuse(), in
    one read of its stored file, and the plain SQLite file it checked, while the block
    runs: a compressed backup's private decompressed copy, or the stored file itself.
    Reading and writing from it uses exactly the bytes that were verified."""
    # why here: as in verify_backup
    from dbguard_plugin.engines.sqlite.verify import checked_copy

    with checked_copy(catalog, manifest, level) as (result, plain):
        if plain is None or not result.ok:
            raise _refusal(catalog, result, record, nothing_was)
        yield plain


@contextlib.contextmanager
def verified_archive(
    catalog: Catalog, manifest: Manifest, *, record: bool = True,
    nothing_was: str = "changed",
) -> Iterator[tuple[Path, Manifest]]:
    """The server backup *manifest* verified (or refused) as by verify_or_refuse(), and
    while the block runs the archive its tool read, with the manifest to hand the tool:
    a repository backup's reassembled copy, so a restore loads exactly what was checked."""
    # why here: the server engine (SQLAlchemy, drivers) only for a server backup
    from dbguard_plugin.engines.server.verify import checked_archive

    with checked_archive(catalog, manifest) as (result, archive):
        if archive is None or not result.ok:
            raise _refusal(catalog, result, record, nothing_was)
        yield archive


def _refusal(catalog: Catalog, result: VerifyResult, record: bool,
             nothing_was: str) -> VerificationError:
    if record:
        catalog.record_verification(result.manifest, False)
    return VerificationError(f"backup {result.manifest.id} failed verification; nothing "
                             f"was {nothing_was}: " + "; ".join(result.problems))


# -- previews --------------------------------------------------------------------------


def server_preview(location: DatabaseLocation, catalog: Catalog, manifest: Manifest) -> Preview:
    """What restoring the server backup *manifest* would change: rows per table, after
    the backup is verified (refused, and recorded, when it fails)."""
    verify_or_refuse(catalog, manifest)
    # why here: the server engine (SQLAlchemy, drivers) only for a server database
    from dbguard_plugin.engines.server.preview import row_changes

    return row_changes(location, manifest)


def preview_restore(
    location: DatabaseLocation, catalog: Catalog, manifest: Manifest,
    open_orders: OpenRule = DEFAULT_OPEN_ORDERS, open_trades: OpenRule = DEFAULT_OPEN_TRADES,
    *, rows_lost: bool = True,
) -> Preview:
    """What restoring *manifest* over *location* would change, read-only. The backup is
    checked first (sha256 and quick_check for SQLite): a damaged file is never opened as
    a database; it is read once, and the comparison reads the copy that was checked."""
    live = location.sqlite_path
    if live is None:
        return server_preview(location, catalog, manifest)
    # why here: the SQLite engine's preview module, only when a restore is previewed
    from dbguard_plugin.engines.sqlite.preview import compute

    with verified_copy(catalog, manifest, "quick_check") as plain:
        return compute(live, plain, open_orders, open_trades, rows_lost=rows_lost)
