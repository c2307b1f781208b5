"""Reading a stored server backup back and checking it with the server's own tool.

A data file is checked by its sha256 (engines/verify.py), then by the tool. A backup in
the repository has no data file: its chunks are reassembled into a private scratch file
(engines/reassemble.py), each rehashed as it is read, and the tool gets that file with
a manifest saying ``compression: none``: the dump went into the repository plain, and
the manifest's compression is the chunks' codec, no concern of the tool. A restore
reads the very copy that was checked (:func:`checked_archive`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.reassemble import reassembled
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.engines.verify import VerifyResult, verify_checksum
from dbguard_plugin.errors import DbGuardError, UnsafePathError, VerificationError
from dbguard_plugin.location import locate

#: A stored archive as the server's tool reads it: its file, and the manifest to hand
#: the tool with it.
Archive = tuple[Path, Manifest]


def archive_problems(catalog: Catalog, manifest: Manifest, path: Path) -> tuple[str, ...]:
    """What the server's tool finds wrong with the dump at *path* (its content proven)."""
    try:
        dialect = dialect_for(catalog.database or locate(manifest.source))
        return tuple(dialect.verify_archive(path, manifest))
    except DbGuardError as exc:
        return (str(exc),)


@contextlib.contextmanager
def opened_archive(catalog: Catalog, manifest: Manifest) -> Iterator[Archive]:
    """Server backup *manifest* as its tool reads it, while the block runs: its data
    file, or its chunks reassembled into a scratch file (VerificationError when one is
    missing or damaged), with the manifest copy that says so."""
    if manifest.storage != "repository":
        yield catalog.data_path(manifest), manifest
        return
    with reassembled(catalog, manifest) as plain:
        yield plain, dataclasses.replace(manifest, compression="none")


@contextlib.contextmanager
def checked_archive(catalog: Catalog,
                    manifest: Manifest) -> Iterator[tuple[VerifyResult, Archive | None]]:
    """Server backup *manifest* verified (its sha256 or every chunk's, then the tool's
    look), and while the block runs the archive that was checked; None when there is
    none to read. Never raises for a bad backup."""
    if manifest.storage != "repository":
        result = verify_checksum(catalog, manifest)
        if not result.ok:
            yield result, None
            return
        path = Path(result.path)
        yield VerifyResult(manifest, result.path,
                           archive_problems(catalog, manifest, path)), (path, manifest)
        return
    where = catalog.location_of(manifest) / manifest.id  # names it in messages
    with contextlib.ExitStack() as stack:
        try:
            path, plain = stack.enter_context(opened_archive(catalog, manifest))
        # a missing or damaged chunk; no room (or a symlink) for the copy
        except (VerificationError, UnsafePathError, OSError) as exc:
            yield VerifyResult(manifest, str(where), (f"{where}: {exc}",)), None
            return
        yield (VerifyResult(manifest, str(where), archive_problems(catalog, plain, path)),
               (path, plain))
