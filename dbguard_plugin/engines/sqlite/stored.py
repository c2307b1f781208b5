"""Reading a stored SQLite backup back: its plain content, hashed in the same pass.

A compressed backup is decompressed into a private ``.tmp-read-<pid>-`` scratch copy in
its catalog (``Catalog.cleanup`` spares it while that pid lives). :func:`read_into`
hashes the stored bytes as the decompressor reads them, so a verification reads the
stored file once, and checks and hands on the very bytes whose sha256 it compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.catalog.codecs import CHUNK, decompressing
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.reassemble import read_chunks, reassembled, room_for_copy
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.files import NO_ROOM, open_private

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class ReadCopy:
    """A stored backup read once: the stored file's size and sha256, and its plain
    content's sha256 and first bytes; *failure* says why it did not decompress."""

    plain: Path
    size: int
    sha256: str
    raw_sha256: str
    head: bytes
    failure: Exception | None = None


class _Hashing:
    """A file object that hashes the bytes passing through it and keeps the first few."""

    def __init__(self, file: BinaryIO, digest: bool = True) -> None:
        self.file = file
        self.name = file.name  # gzip names its stream after it, as it would the file
        self.size = 0
        self.digest = hashlib.sha256()
        self._hashing = digest
        self.head = b""

    def _saw(self, data: bytes) -> bytes:
        if self._hashing:
            self.digest.update(data)
        self.size += len(data)
        if len(self.head) < len(SQLITE_MAGIC):
            self.head = (self.head + data)[:len(SQLITE_MAGIC)]
        return data

    def read(self, size: int = -1) -> bytes:
        return self._saw(self.file.read(size))

    def write(self, data: bytes) -> int:
        return self.file.write(self._saw(data))

    def close(self) -> None:
        """Leaves the file open for its owner: a zstd reader closes its source when done,
        and the rest of the file is still to be hashed."""


def scratch_path(stored: Path, scratch_dir: Path) -> Path:
    """This process's scratch name for the plain content of *stored*."""
    return scratch_dir / f"{TMP_PREFIX}read-{os.getpid()}-{stored.name}.sqlite"


@contextlib.contextmanager
def scratch(stored: Path, compression: str, scratch_dir: Path) -> Iterator[Path]:
    """Where the plain content of *stored* is read to while the block runs: *stored*
    itself when it is not compressed, else a new private scratch file, removed after."""
    if compression == "none":
        yield stored
        return
    tmp = scratch_path(stored, scratch_dir)
    # cleanup() spares .tmp-read-<pid>- files of live processes: a concurrent backup's
    # cleanup must not pull this copy from under a running verify or restore.
    os.close(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _rewritten(tmp: Path) -> BinaryIO:
    """The scratch file *tmp*, emptied for writing, without following a symlink."""
    return os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "wb")


def decompress(stored: Path, src: BinaryIO | _Hashing, out: BinaryIO | _Hashing,
               compression: str) -> None:
    """The plain content of *src* (the stored file *stored*) into *out*; raises
    VerificationError when the stream is damaged."""
    try:
        with decompressing(src, compression) as reader:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            raise  # the copy's disk is full: nothing wrong with the backup
        raise VerificationError(f"{stored}: cannot decompress ({exc})") from None


def read_into(stored: Path, compression: str, plain: Path) -> ReadCopy:
    """Read *stored* once: hash it while it is decompressed into *plain* (made by
    :func:`scratch`; *stored* itself for an uncompressed backup, then only hashed). A
    stream that fails to decompress is hashed to its end all the same and the failure
    kept, so that a changed file is still reported as one."""
    failure: Exception | None = None
    with open(stored, "rb") as fh:
        src = _Hashing(fh)
        if plain == stored:
            while src.read(CHUNK):
                pass
            sha = src.digest.hexdigest()
            return ReadCopy(plain, src.size, sha, sha, src.head)
        with _rewritten(plain) as out_file:
            out = _Hashing(out_file)
            try:
                decompress(stored, src, out, compression)
            except Exception as exc:  # a damaged archive can raise anything from the decompressor
                if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                    raise  # the copy's disk is full: nothing wrong with the backup
                failure = exc
        while src.read(CHUNK):  # what the decompressor left unread, all of it after a failure
            pass
    return ReadCopy(plain, src.size, src.digest.hexdigest(), out.digest.hexdigest(), out.head,
                    failure)


@contextlib.contextmanager
def opened_copy(stored: Path, compression: str, scratch_dir: Path) -> Iterator[Path]:
    """The plain SQLite file inside a stored backup: itself, or a decompressed scratch copy."""
    with scratch(stored, compression, scratch_dir) as tmp:
        if tmp != stored:
            with open(stored, "rb") as src, _rewritten(tmp) as out:
                decompress(stored, src, out, compression)
        yield tmp


def read_repository(catalog: Catalog, manifest: Manifest, plain: Path) -> ReadCopy:
    """Reassemble the repository backup *manifest* into *plain* (made by
    :func:`scratch`) through :func:`~dbguard_plugin.engines.reassemble.read_chunks`,
    keeping the first bytes for the header check; a missing or damaged chunk is kept as
    the copy's *failure*, naming the chunk."""
    failure: Exception | None = None
    with _rewritten(plain) as out_file:
        out = _Hashing(out_file, digest=False)
        try:
            read_chunks(catalog, manifest, out)  # type: ignore[arg-type]
        except VerificationError as exc:
            failure = exc
    return ReadCopy(plain, out.size, manifest.sha256, manifest.raw_sha256, out.head, failure)


@contextlib.contextmanager
def opened_backup(catalog: Catalog, manifest: Manifest) -> Iterator[Path]:
    """The plain SQLite file of backup *manifest*, whatever its storage: its data file
    (or a decompressed scratch copy), or its chunks reassembled into a scratch copy."""
    if manifest.storage == "repository":
        with reassembled(catalog, manifest) as plain:
            yield plain
        return
    with contextlib.ExitStack() as stack:
        with room_for_copy(catalog, manifest):
            plain = stack.enter_context(opened_copy(catalog.data_path(manifest),
                                                    manifest.compression, catalog.directory))
        yield plain
