"""Verifying a stored backup: its checksum against the manifest, then SQLite's own check."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.sqlite.backup import SQLITE_MAGIC, file_digest, opened_copy, sqlite_uri
from dbguard_plugin.engines.sqlite.facts import check, schema_fingerprint
from dbguard_plugin.errors import UnsafePathError


@dataclass(frozen=True)
class VerifyResult:
    manifest: Manifest
    path: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"id": self.manifest.id, "path": self.path, "ok": self.ok,
                "problems": list(self.problems)}


def verify_backup(
    catalog: Catalog, manifest: Manifest, level: str = "integrity_check"
) -> VerifyResult:
    """Recompute the sha256, then run *level* on the SQLite file (a server dump: its
    tool's own check); never raises for a bad file."""
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
            f"{manifest.sha256[:16]}... (size {manifest.size}): the file was changed or damaged",
        ))
    if manifest.backend in ("postgresql", "mariadb"):
        from dbguard_plugin.engines.server.verify import archive_problems

        return VerifyResult(manifest, shown, archive_problems(catalog, manifest, path))
    problems: list[str] = []
    try:
        with opened_copy(path, manifest.compression, catalog.directory) as plain:
            if manifest.compression != "none":
                _, raw_sha = file_digest(plain)
                if raw_sha != manifest.raw_sha256:
                    problems.append(f"{path}: decompressed content does not match the manifest")
            with open(plain, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    return VerifyResult(manifest, shown, (f"{path}: not a SQLite database",))
            conn = sqlite3.connect(sqlite_uri(plain, "ro"), uri=True)
            try:
                problems += [f"{path}: {level}: {p}" for p in check(conn, level)[:10]]
                if manifest.schema_fingerprint and (
                    schema_fingerprint(conn) != manifest.schema_fingerprint
                ):
                    problems.append(f"{path}: schema differs from the manifest's fingerprint")
            finally:
                conn.close()
    except sqlite3.DatabaseError as exc:
        problems.append(f"{path}: SQLite cannot read it: {exc}")
    except Exception as exc:  # a damaged archive can raise anything from the decompressor
        problems.append(f"{path}: {exc}")
    return VerifyResult(manifest, shown, tuple(problems))
