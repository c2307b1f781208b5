"""Converting a catalog's full-copy SQLite backups into its deduplicated repository.

One backup at a time, under the catalog lock: the data file is verified (sha256 and
quick_check), its chunks are stored (only those the repository lacks), the manifest is
rewritten in place (same id, time, reason and facts; ``storage: "repository"``) and only
then is the data file deleted. A crash at any point leaves the backup either as it was
or converted, never lost; a data file whose manifest already says ``repository`` is a
leftover the catalog's clean-up removes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Repository
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines import verify_or_refuse
from dbguard_plugin.engines.sqlite.stored import opened_backup
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.files import fsync_dir


@dataclass(frozen=True)
class Converted:
    """One backup moved into the repository: the bytes its file took and it added."""

    id: str
    file_size: int
    added: int

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def convertible(catalog: Catalog) -> list[Manifest]:
    """The catalog's SQLite backups that are still data files, oldest first."""
    return [m for m in catalog.manifests()
            if m.storage == "file" and m.backend == "sqlite"]


def convert(catalog: Catalog, compression: str,
            each: Callable[[int, int], None] | None = None) -> list[Converted]:
    """Move every convertible backup of *catalog* into its repository (see module).
    A backup that fails verification is left as it is and named in the error raised
    after the others are converted."""
    done: list[Converted] = []
    refused: list[str] = []
    todo = convertible(catalog)
    for n, manifest in enumerate(todo):
        if each is not None:
            each(n, len(todo))
        try:
            done.append(_convert_one(catalog, manifest, compression))
        except VerificationError as exc:
            refused.append(str(exc))
    if refused:
        raise VerificationError("; ".join(refused) + f" ({len(done)} converted)")
    return done


def _convert_one(catalog: Catalog, manifest: Manifest, compression: str) -> Converted:
    verify_or_refuse(catalog, manifest, "quick_check", nothing_was="converted")
    data = catalog.data_path(manifest)
    with catalog.locked():
        if manifest.id in catalog.pinned_ids():
            raise VerificationError(f"backup {manifest.id} is in use by a running "
                                    "restore or rollback; it was not converted")
        repository = Repository.of(catalog.directory)
        with opened_backup(catalog, manifest) as plain:
            stored = repository.store(plain, compression)
        if stored.raw_size != manifest.raw_size:
            raise VerificationError(f"backup {manifest.id}: its chunks do not add up to "
                                    "its file; nothing was converted")
        reach("convert:chunked")
        catalog.write_manifest(dataclasses.replace(
            manifest, storage="repository", file="", compression=compression,
            chunk_list=stored.chunk_list, chunk_count=stored.chunk_count,
            chunk_size=repository.chunk_size, size=stored.size, added=stored.added,
            sha256=stored.chunk_list, raw_sha256=""))
        reach("convert:manifested")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data)
        fsync_dir(catalog.directory)
    return Converted(manifest.id, manifest.size, stored.added)
