"""The deduplicated repository: a backup is an ordered list of chunks, each stored once.

A SQLite file is made of fixed-size pages that change in place, so a backup cut into
page-sized chunks shares every unchanged page with the backups before it. Each chunk is
content-addressed (its id is the sha256 of its plain bytes) and stored once, optionally
compressed, in a *pack*: a file of chunks written by one backup, with a binary *index*
beside it naming each chunk's place. A backup's ordered chunk ids are themselves stored
as one more chunk, the *chunk list*, whose id the manifest holds (``chunk_list``): it
commits to the whole content, as a sha256 of the file would.

Layout, inside the catalog directory::

    repository/
      config.json                 format, chunk size (fixed when the repository is made)
      lock                        readers hold it shared; collection deletes exclusive
      packs/ab/<pack>.pack        chunks, back to back
      packs/ab/<pack>.idx         "DBGIDX1\\n", then per chunk: id (32 bytes), offset
                                  (8), stored length (4), plain length (4), codec (1)

Durability, in order: a pack is written and fsynced, then its index, each under a
``.tmp-`` name renamed into place, the directory fsynced; only then does the backup's
manifest (written by the catalog, fsynced last) name the chunk list. A crash leaves at
most packs no manifest references, which :meth:`Repository.collect` removes.

Writers (a backup's :meth:`~Repository.store`, prune's :meth:`~Repository.collect`) run
under the catalog lock, so a chunk written by a backup whose manifest is not written yet
is never collected. Readers (restore, verify, preview) hold the repository lock shared
while they read; collection deletes only when it gets that lock exclusive, and leaves
the garbage for the next prune otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from dbguard_plugin import locks
from dbguard_plugin.catalog.codecs import zstandard
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import ConfigError, VerificationError
from dbguard_plugin.files import fsync_dir, open_private, private_dir, write_atomic

FORMAT = 1
#: The chunk size of a new repository: one page of SQLite's default size. Measured on a
#: bot database with an index (1% new rows, the newest updated): a second backup adds
#: 2.5% of the file with 4 KiB chunks, 4.1% with 8, 7.1% with 16, 20% with 64 KiB, since
#: an index takes its new entries on pages spread over the whole file. Pages of another
#: size still deduplicate (a smaller page: several per chunk; a larger: several chunks).
CHUNK_SIZE = 4096
#: The average chunk of a server dump (content-defined chunking): rows of a text or
#: archive dump are not page-aligned, so boundaries come from the content itself.
CDC_AVERAGE = 16 * 1024
#: The file is read, and packs are written, in blocks of this size.
_BLOCK = 1 << 20
#: A pack is closed when it holds this many stored bytes.
PACK_TARGET = 16 * 1024 * 1024
#: Collection rewrites a pack whose unreferenced bytes exceed this share of it.
REPACK_SHARE = 0.5
DIRECTORY = "repository"
#: Per-chunk codecs: the catalog's compression setting -> the codec a chunk is stored with.
CODECS = {"none": "none", "gzip": "zlib", "zstd": "zstd"}
_CODEC_BYTES = ("none", "zlib", "zstd")

_INDEX_MAGIC = b"DBGIDX1\n"
_ENTRY = struct.Struct(">32sQIIB")
_ID = 32
_PACK_ID = re.compile(r"^[0-9a-f]{32}$")
_TMP = ".tmp-"

Progress = Callable[[int, int], None]


class Blob(NamedTuple):
    """Where one chunk is stored: its pack, offset and stored length, plain length, codec."""

    pack: str
    offset: int
    length: int
    plain: int
    codec: str


@dataclass(frozen=True)
class Stored:
    """What :meth:`Repository.store` wrote: the chunk list's id, and the bytes it added."""

    chunk_list: str
    chunk_count: int
    raw_size: int
    #: Stored bytes of every chunk the backup references (its own size, shared or not).
    size: int
    #: Stored bytes this backup added to the repository (0 when nothing changed).
    added: int


@dataclass
class Collected:
    """What :meth:`Repository.collect` removed, and what it had to leave for next time."""

    packs_removed: list[str] = field(default_factory=list)
    packs_rewritten: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    deferred: str = ""


class Repository:
    """The chunk store of one catalog (``<catalog>/repository``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.packs_dir = directory / "packs"
        self._index: dict[bytes, Blob] | None = None

    @classmethod
    def of(cls, catalog_dir: Path) -> Repository:
        return cls(catalog_dir / DIRECTORY)

    def exists(self) -> bool:
        return (self.directory / "config.json").is_file()

    @property
    def chunk_size(self) -> int:
        return self._config_chunk_size()

    def prepare(self, chunk_size: int = CHUNK_SIZE) -> None:
        """Make the repository (0700 directories) with *chunk_size* if it is new."""
        private_dir(self.directory)
        private_dir(self.packs_dir)
        if not self.exists():
            config = {"format": FORMAT, "chunk_size": chunk_size, "hash": "sha256"}
            write_atomic(self.directory / "config.json",
                         json.dumps(config, indent=1).encode() + b"\n", fsync=True)

    def _config_chunk_size(self) -> int:
        path = self.directory / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return CHUNK_SIZE
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: repository config is unreadable ({exc})") \
                from None
        size = config.get("chunk_size") if isinstance(config, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or not (
                512 <= size <= 1 << 26 and size & (size - 1) == 0):
            raise VerificationError(f"{path}: repository config is damaged: chunk_size "
                                    "must be a power of two between 512 and 64 MiB")
        return size

    # -- the index ------------------------------------------------------------------

    def index(self) -> dict[bytes, Blob]:
        """Every stored chunk (raw id) -> where it is, from the packs' index files."""
        if self._index is None:
            found: dict[bytes, Blob] = {}
            for idx in self._index_files():
                for chunk, blob in read_index(idx).items():
                    found.setdefault(chunk, blob)
            self._index = found
        return self._index

    def _index_files(self) -> list[Path]:
        if not self.packs_dir.is_dir():
            return []
        return sorted(p for p in self.packs_dir.glob("*/*.idx")
                      if _PACK_ID.match(p.stem) and not p.is_symlink())

    def pack_path(self, pack: str) -> Path:
        if not _PACK_ID.match(pack):
            raise VerificationError(f"{self.directory}: pack id {pack!r} is not one "
                                    "dbguard wrote")
        return self.packs_dir / pack[:2] / f"{pack}.pack"

    # -- writing --------------------------------------------------------------------

    def store(self, plain: Path, compression: str = "none",
              progress: Progress | None = None, *, content_defined: bool = False) -> Stored:
        """Cut *plain* into chunks and write those the repository lacks, then its chunk
        list. Call with the catalog lock held; all of it is durable when it returns.

        A SQLite file is cut into fixed page-aligned chunks; a server dump, whose rows
        move when one before them grows, with *content_defined* chunking (FastCDC,
        about :data:`CDC_AVERAGE` bytes a chunk), so that consecutive dumps of a slowly
        changing database still share most chunks."""
        self.prepare()
        writer = _PackWriter(self, self.index(), CODECS[compression])
        ids = bytearray()
        total = plain.stat().st_size
        try:
            pieces = _content_defined(plain) if content_defined else _fixed(
                plain, self.chunk_size)
            for piece in pieces:
                ids += writer.put(piece)
                if progress is not None and writer.plain % _BLOCK < len(piece):
                    progress(writer.plain, total)
            chunk_list = writer.put(memoryview(bytes(ids)), codec="none")
            writer.close()
        except BaseException:
            writer.abandon()
            self._index = None
            raise
        return Stored(chunk_list.hex(), len(ids) // _ID, writer.plain - len(ids),
                      writer.referenced, writer.added)

    # -- reading --------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the repository's read lock: collection deletes nothing meanwhile."""
        private_dir(self.directory)
        with os.fdopen(open_private(self.directory / "lock"), "r+b") as fh:
            while not locks.try_lock(fh, shared=True):
                time.sleep(0.01)  # a collection holds it only while it unlinks files
            self._index = None  # packs may have been rewritten since it was read
            yield

    def chunks_of(self, chunk_list: str) -> list[bytes]:
        """The ordered chunk ids of the backup whose chunk list is *chunk_list*."""
        with _Packs(self) as packs:
            return _ids(packs.read(_raw_id(chunk_list)), chunk_list)

    def read_into(self, chunk_list: str, out: IO[bytes],
                  progress: Progress | None = None) -> int:
        """Write the backup's plain bytes, in order, to *out*, each chunk checked against
        its id; their size. VerificationError names a missing or damaged chunk. Call
        inside :meth:`reading`."""
        size = 0
        with _Packs(self) as packs:
            for data in packs.read_all(_ids(packs.read(_raw_id(chunk_list)), chunk_list)):
                out.write(data)
                size += len(data)
                if progress is not None:
                    progress(size, 0)
        return size

    # -- collection -----------------------------------------------------------------

    def collect(self, referenced: set[bytes]) -> Collected:
        """Remove what no manifest references: packs with no referenced chunk, packs
        that interrupted backups left without an index; rewrite packs that are mostly
        garbage. Call with the catalog lock held, *referenced* (every referenced chunk
        list and chunk, see :meth:`referenced_by`) read under it."""
        report = Collected()
        if not self.packs_dir.is_dir():
            return report
        with os.fdopen(open_private(self.directory / "lock"), "r+b") as fh:
            if not locks.try_lock(fh):
                report.deferred = "a restore or verify is reading the repository"
                return report
            self._remove_leftovers(report)
            for idx in self._index_files():
                self._collect_pack(idx, referenced, report)
        self._index = None
        return report

    def referenced_by(self, chunk_lists: Iterable[str]) -> set[bytes]:
        """The chunk lists and every chunk they name (VerificationError when one of the
        lists cannot be read: nothing can then be collected safely)."""
        referenced: set[bytes] = set()
        with _Packs(self) as packs:
            for chunk_list in chunk_lists:
                raw = _raw_id(chunk_list)
                referenced.add(raw)
                referenced.update(_ids(packs.read(raw), chunk_list))
        return referenced

    def _remove_leftovers(self, report: Collected) -> None:
        indexed = {p.stem for p in self._index_files()}
        for path in sorted(self.packs_dir.glob("*/*")):
            if path.name.startswith(_TMP) or (
                    path.suffix == ".pack" and path.stem not in indexed):
                report.bytes_freed += _size(path)
                path.unlink(missing_ok=True)
                report.packs_removed.append(path.name)
                reach("gc:leftover-removed")

    def _collect_pack(self, idx: Path, referenced: set[bytes], report: Collected) -> None:
        blobs = read_index(idx)
        live = {c: b for c, b in blobs.items() if c in referenced}
        stored = sum(b.length for b in blobs.values())
        dead = stored - sum(b.length for b in live.values())
        if live and dead <= REPACK_SHARE * stored:
            return
        if live:
            self._rewrite(live)
            report.packs_rewritten.append(idx.stem)
            reach("gc:repacked")
        pack = self.pack_path(idx.stem)
        idx.unlink()
        fsync_dir(idx.parent)
        reach("gc:index-removed")
        pack.unlink(missing_ok=True)
        report.bytes_freed += dead
        if not live:
            report.packs_removed.append(idx.stem)

    def _rewrite(self, live: dict[bytes, Blob]) -> None:
        """Copy the live chunks of a pack into a new one, durably, before it goes."""
        writer = _PackWriter(self, {}, "none")
        try:
            with _Packs(self) as packs:
                for chunk, blob in live.items():
                    writer.append(chunk, packs.read_stored(blob), blob.plain, blob.codec)
            writer.close()
        except BaseException:
            writer.abandon()
            raise

    def stored_bytes(self) -> int:
        """The repository's size on disk: packs, indexes and config."""
        return sum(_size(p) for p in self.directory.rglob("*") if p.is_file())


def _fixed(path: Path, step: int) -> Iterator[memoryview]:
    """*path* in chunks of *step* bytes, read a block at a time."""
    with open(path, "rb", buffering=0) as src:
        while block := src.read(max(_BLOCK, step)):
            view = memoryview(block)
            for start in range(0, len(block), step):
                yield view[start:start + step]


def _content_defined(path: Path) -> Iterator[memoryview]:
    """*path* in content-defined chunks (FastCDC 2020, through pyfastcdc)."""
    try:
        # why here: an optional extra, needed only for server dumps in the repository
        from pyfastcdc import FastCDC
    except ImportError:
        raise ConfigError("storage = 'repository' for a PostgreSQL or MariaDB database "
                          "needs the pyfastcdc package: pip install "
                          "'dbguard-plugin[repository]', or set storage to files") from None
    for chunk in FastCDC(CDC_AVERAGE).cut_file(str(path)):
        yield memoryview(chunk.data)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _raw_id(chunk_list: str) -> bytes:
    try:
        raw = bytes.fromhex(chunk_list)
    except ValueError:
        raw = b""
    if len(raw) != _ID:
        raise VerificationError(f"chunk list {chunk_list[:16]!r} is not a chunk id")
    return raw


def _ids(data: bytes, chunk_list: str) -> list[bytes]:
    if len(data) % _ID:
        raise VerificationError(f"chunk list {chunk_list[:16]} is damaged")
    return [data[i:i + _ID] for i in range(0, len(data), _ID)]


def read_index(path: Path) -> dict[bytes, Blob]:
    """The chunks pack index *path* names; VerificationError names the file when it is
    damaged (a wrong header, a torn entry, an unknown codec)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"{path}: pack index is unreadable ({exc.strerror})") \
            from None
    body = data[len(_INDEX_MAGIC):]
    if not data.startswith(_INDEX_MAGIC) or len(body) % _ENTRY.size:
        raise VerificationError(f"{path}: pack index is damaged; 'dbguard verify --all' "
                                "names the backups it affects")
    pack = path.stem
    found: dict[bytes, Blob] = {}
    for chunk, offset, length, plain, codec in _ENTRY.iter_unpack(body):
        if codec >= len(_CODEC_BYTES):
            raise VerificationError(f"{path}: pack index is damaged (codec {codec})")
        found[chunk] = Blob(pack, offset, length, plain, _CODEC_BYTES[codec])
    return found


class _PackWriter:
    """New chunks into new packs: each written and fsynced, then its index."""

    def __init__(self, repository: Repository, index: dict[bytes, Blob],
                 codec: str) -> None:
        self.repository = repository
        self.index = index
        self.codec = codec
        self.added = self.referenced = self.plain = 0
        self._pack: str | None = None
        self._fh: IO[bytes] | None = None
        self._entries = bytearray(_INDEX_MAGIC)
        self._offset = 0
        self._tmp: list[Path] = []

    def put(self, data: memoryview, codec: str | None = None) -> bytes:
        """Chunk *data*: stored unless the repository has it already; its raw id."""
        chunk = hashlib.sha256(data).digest()
        blob = self.index.get(chunk)
        if blob is None:
            plain = bytes(data)
            blob = self.append(chunk, _encode(plain, codec or self.codec), len(plain),
                               codec or self.codec)
            self.index[chunk] = blob
        self.referenced += blob.length
        self.plain += len(data)
        return chunk

    def append(self, chunk: bytes, stored: bytes, plain: int, codec: str) -> Blob:
        """Append a chunk already encoded with *codec*."""
        if self._fh is None:
            self._open()
        fh, pack = self._fh, self._pack
        assert fh is not None
        assert pack is not None
        fh.write(stored)
        blob = Blob(pack, self._offset, len(stored), plain, codec)
        self._entries += _ENTRY.pack(chunk, blob.offset, blob.length, plain,
                                     _CODEC_BYTES.index(codec))
        self._offset += len(stored)
        self.added += len(stored)
        if self._offset >= PACK_TARGET:
            self._finish()
        return blob

    def _open(self) -> None:
        self._pack = secrets.token_hex(16)
        path = self.repository.pack_path(self._pack)
        private_dir(path.parent)
        tmp = path.with_name(f"{_TMP}{path.name}")
        self._tmp.append(tmp)
        self._fh = os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb",
                             buffering=_BLOCK)
        self._entries, self._offset = bytearray(_INDEX_MAGIC), 0

    def _finish(self) -> None:
        """Make the open pack durable: pack fsynced and renamed, then its index."""
        fh, pack = self._fh, self._pack
        assert fh is not None
        assert pack is not None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        self._fh = None
        path = self.repository.pack_path(pack)
        os.replace(path.with_name(f"{_TMP}{path.name}"), path)
        reach("repository:pack-written")
        write_atomic(path.with_suffix(".idx"), bytes(self._entries), fsync=True)
        fsync_dir(path.parent)
        reach("repository:indexed")

    def close(self) -> None:
        if self._fh is not None:
            self._finish()

    def abandon(self) -> None:
        """After a failure: remove the unfinished pack (finished ones stay, unreferenced,
        until the next collection)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


def _encode(data: bytes, codec: str) -> bytes:
    if codec == "zlib":
        return zlib.compress(data, 6)
    if codec == "zstd":
        return bytes(zstandard().ZstdCompressor(level=3).compress(data))
    return data


def _decode(stored: bytes, codec: str, plain: int) -> bytes:
    if codec == "zlib":
        return zlib.decompress(stored, bufsize=plain or zlib.DEF_BUF_SIZE)
    if codec == "zstd":
        return bytes(zstandard().ZstdDecompressor().decompress(stored,
                                                               max_output_size=plain))
    return stored


class _Packs:
    """Open pack files, for reading chunks by id."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.index = repository.index()
        self._open: dict[str, int] = {}

    def __enter__(self) -> _Packs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._open.values():
            os.close(fd)

    def _fd(self, pack: str) -> int:
        fd = self._open.get(pack)
        if fd is None:
            path = self.repository.pack_path(pack)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                raise VerificationError(f"{path}: pack is unreadable ({exc.strerror})") \
                    from None
            self._open[pack] = fd
        return fd

    def read_stored(self, blob: Blob) -> bytes:
        data = os.pread(self._fd(blob.pack), blob.length, blob.offset)
        if len(data) != blob.length:
            raise VerificationError(f"pack {blob.pack} is truncated")
        return data

    def read(self, chunk: bytes) -> bytes:
        """The plain bytes of *chunk*, checked against its id."""
        return self.checked(chunk, self._blob(chunk), None)

    def _blob(self, chunk: bytes) -> Blob:
        blob = self.index.get(chunk)
        if blob is None:
            raise VerificationError(f"chunk {chunk.hex()[:16]} is missing from the "
                                    "repository")
        return blob

    def checked(self, chunk: bytes, blob: Blob, stored: bytes | None) -> bytes:
        """*chunk*'s plain bytes from its *stored* bytes (read here when None)."""
        raw = self.read_stored(blob) if stored is None else stored
        try:
            data = _decode(raw, blob.codec, blob.plain)
        except Exception as exc:  # zlib.error, zstandard's own error class
            raise VerificationError(f"chunk {chunk.hex()[:16]} in pack {blob.pack} does "
                                    f"not decompress ({exc})") from None
        if hashlib.sha256(data).digest() != chunk:
            raise VerificationError(f"chunk {chunk.hex()[:16]} in pack {blob.pack} is "
                                    "damaged (its sha256 differs)")
        return data

    def read_all(self, chunks: list[bytes]) -> Iterator[bytes]:
        """The plain bytes of *chunks* in order: runs stored back to back in one pack
        are read with one pread of up to 1 MiB, then each chunk checked."""
        i = 0
        while i < len(chunks):
            first = self._blob(chunks[i])
            run = [first]
            end = first.offset + first.length
            while i + len(run) < len(chunks) and end - first.offset < _BLOCK:
                nxt = self.index.get(chunks[i + len(run)])
                if nxt is None or nxt.pack != first.pack or nxt.offset != end:
                    break
                run.append(nxt)
                end += nxt.length
            block = os.pread(self._fd(first.pack), end - first.offset, first.offset)
            for j, blob in enumerate(run):
                start = blob.offset - first.offset
                stored = block[start:start + blob.length]
                if len(stored) != blob.length:
                    raise VerificationError(f"pack {blob.pack} is truncated")
                yield self.checked(chunks[i + j], blob, stored)
            i += len(run)
