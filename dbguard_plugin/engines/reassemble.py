"""A backup stored in the repository, read back as one plain file, whatever its engine.

A repository backup has no data file: its chunks are reassembled, in order, into a
private ``.tmp-read-<pid>-`` scratch file in its catalog, each chunk rehashed as it is
read (:meth:`~dbguard_plugin.catalog.repository.Repository.read_into`). Since the chunk
list's id is the manifest's sha256 and each chunk is checked against its own id, the
file is exactly the backup's content, or the read fails naming the bad chunk. The name
carries this process's pid: ``Catalog.cleanup`` spares it while the process lives, so a
concurrent backup's cleanup never pulls it from under a running verify or restore.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Repository
from dbguard_plugin.errors import DbGuardError, VerificationError
from dbguard_plugin.files import NO_ROOM, open_private


def scratch_path(catalog: Catalog, manifest: Manifest) -> Path:
    """A new scratch name for backup *manifest*'s content: this process's, and unique
    in it (a restore may hold one backup's copy while it reads another's)."""
    return catalog.directory / f"{TMP_PREFIX}read-{os.getpid()}-{secrets.token_hex(4)}-" \
                               f"{manifest.id}"


def read_chunks(catalog: Catalog, manifest: Manifest, out: IO[bytes]) -> int:
    """Write repository backup *manifest*'s plain content to *out*, every chunk checked
    against its id; its size. VerificationError names the backup and a missing or
    damaged chunk, or says the chunks do not make the size the manifest names."""
    repository = Repository.of(catalog.directory)
    try:
        # shared: a prune's collection deletes no pack while the chunks are read
        with repository.reading():
            size = repository.read_into(manifest.chunk_list, out)
    except VerificationError as exc:
        raise VerificationError(f"backup {manifest.id}: {exc}") from None
    if size != manifest.raw_size:
        raise VerificationError(f"backup {manifest.id}: its chunks make {size} bytes, not "
                                f"the {manifest.raw_size} its manifest names")
    return size


@contextlib.contextmanager
def reassembled(catalog: Catalog, manifest: Manifest) -> Iterator[Path]:
    """Repository backup *manifest*'s content in a private scratch file while the block
    runs (see :func:`read_chunks` for what it raises); the file is removed afterwards,
    also when the read fails half way."""
    tmp = scratch_path(catalog, manifest)
    try:
        with room_for_copy(catalog, manifest), \
                os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as out:
            read_chunks(catalog, manifest, out)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def room_for_copy(catalog: Catalog, manifest: Manifest) -> Iterator[None]:
    """Around the writing of backup *manifest*'s plain scratch copy: a disk (or quota)
    with no room for it is one clear error, since it says nothing about the backup,
    which must be neither reported damaged nor marked unverified for it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        need = manifest.raw_size / 2**20
        raise DbGuardError(
            f"{catalog.directory}: no room to read backup {manifest.id} into a scratch "
            f"copy ({exc.strerror}; it needs {need:.1f} MiB there); nothing was changed "
            "and the backup is not marked: free space, then try again") from None
