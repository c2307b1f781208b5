"""Verifying a stored server backup: its sha256, then the server tool's look at it."""

from __future__ import annotations

from dbguard_plugin.backup import file_digest
from dbguard_plugin.catalog import Catalog
from dbguard_plugin.errors import DbGuardError, UnsafePathError
from dbguard_plugin.location import locate
from dbguard_plugin.manifest import Manifest
from dbguard_plugin.servers import dialect_for
from dbguard_plugin.verify import VerifyResult


def verify_server_backup(catalog: Catalog, manifest: Manifest) -> VerifyResult:
    """Never raises for a bad backup: the problems come back in the result."""
    try:
        path = catalog.data_path(manifest)
    except UnsafePathError as exc:
        return VerifyResult(manifest, str(catalog.directory / manifest.file), (str(exc),))
    shown = str(path)
    if not path.is_file():
        return VerifyResult(manifest, shown, (f"{path}: backup file is missing",))
    size, sha = file_digest(path)
    if size != manifest.size or sha != manifest.sha256:
        return VerifyResult(manifest, shown, (
            f"{path}: sha256 {sha[:16]}... (size {size}) does not match the manifest's "
            f"{manifest.sha256[:16]}... (size {manifest.size}): the file was changed or "
            "damaged",))
    try:
        dialect = dialect_for(catalog.database or locate(manifest.source))
        problems = tuple(dialect.verify_archive(path, manifest))
    except DbGuardError as exc:
        problems = (str(exc),)
    return VerifyResult(manifest, shown, problems)
