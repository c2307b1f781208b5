"""Checking a stored server backup with the server's own tool (after verify.py's sha256)."""

from __future__ import annotations

from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.location import locate


def archive_problems(catalog: Catalog, manifest: Manifest, path: Path) -> tuple[str, ...]:
    """What the server's tool finds wrong with the dump at *path* (its sha256 matched)."""
    try:
        dialect = dialect_for(catalog.database or locate(manifest.source))
        return tuple(dialect.verify_archive(path, manifest))
    except DbGuardError as exc:
        return (str(exc),)

