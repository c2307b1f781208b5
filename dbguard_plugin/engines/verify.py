"""Verifying a stored backup, the part every engine shares: its checksum.

A stored file whose sha256 matches its manifest is then checked by its engine (SQLite's
own check, or the server tool's); :func:`dbguard_plugin.engines.verify_backup` chooses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.codecs import file_digest
from dbguard_plugin.catalog.manifest import Manifest
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


def located(catalog: Catalog, manifest: Manifest) -> VerifyResult:
    """The stored file's path, with a problem when it is unsafe or missing; reads nothing."""
    try:
        path = catalog.data_path(manifest)
    except UnsafePathError as exc:
        return VerifyResult(manifest, str(catalog.directory / manifest.file), (str(exc),))
    if not path.is_file():
        return VerifyResult(manifest, str(path), (f"{path}: backup file is missing",))
    return VerifyResult(manifest, str(path), ())


def digest_problems(manifest: Manifest, path: Path, size: int, sha: str) -> tuple[str, ...]:
    """What is wrong with the stored file *path* whose size and sha256 were read as these."""
    if size != manifest.size or sha != manifest.sha256:
        return (
            f"{path}: sha256 {sha[:16]}... (size {size}) does not match the manifest's "
            f"{manifest.sha256[:16]}... (size {manifest.size}): the file was changed or damaged",
        )
    return ()


def verify_checksum(catalog: Catalog, manifest: Manifest) -> VerifyResult:
    """The stored file against its manifest's size and sha256; never raises for a bad
    file. ``path`` is the file the engine's check reads next when this one is ok."""
    result = located(catalog, manifest)
    if not result.ok:
        return result
    path = Path(result.path)
    return VerifyResult(manifest, result.path, digest_problems(manifest, path, *file_digest(path)))
