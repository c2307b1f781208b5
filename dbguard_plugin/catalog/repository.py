"""The deduplicated repository: a backup is an ordered list of chunks, each stored once.

A SQLite file is made of fixed-size pages that change in place, so a backup cut into
page-aligned chunks (64 KiB: every SQLite page size divides it) shares every unchanged
chunk with the backups before it. Each chunk is content-addressed (its id is the sha256
of its plain bytes) and stored once, optionally compressed, in a *pack*: a file of
chunks written by one backup, with an *index* beside it naming each chunk's offset.

Layout, inside the catalog directory::

    repository/
      config.json                 format, chunk size (fixed when the repository is made)
      lock                        readers hold it shared; collection deletes exclusive
      packs/ab/<pack>.pack        chunks, back to back
      packs/ab/<pack>.idx         JSON: the pack's sha256 and [chunk id, offset, length,
                                  plain length, codec] per chunk

Durability, in order: a pack is written and fsynced, then its index, each under a
``.tmp-`` name renamed into place, the directory fsynced; only then does the backup's
manifest (written by the catalog, fsynced last) reference the chunks. A crash leaves at
most a pack no manifest references, which :meth:`Repository.collect` removes.

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
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dbguard_plugin import locks
from dbguard_plugin.catalog.codecs import zstandard
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.files import fsync_dir, open_private, private_dir, write_atomic

FORMAT = 1
#: The chunk size of a new repository: one page of SQLite's default size. Measured on a
#: bot database with an index (1% new rows, the newest updated): a second backup adds
#: 2.5% of the file with 4 KiB chunks, 4.1% with 8, 7.1% with 16, 20% with 64 KiB, since
#: an index takes its new entries on pages spread over the whole file. Pages of another
#: size still deduplicate (a smaller page: several per chunk; a larger: several chunks).
CHUNK_SIZE = 4096
#: The file is read in blocks of this size and cut into chunks in memory.
_READ = 1 << 20
#: A pack is closed when it holds this many stored bytes.
PACK_TARGET = 16 * 1024 * 1024
#: Collection rewrites a pack whose unreferenced bytes exceed this share of it.
REPACK_SHARE = 0.5
DIRECTORY = "repository"
#: Per-chunk codecs: the catalog's compression setting -> the codec a chunk is stored with.
CODECS = {"none": "none", "gzip": "zlib", "zstd": "zstd"}

_PACK_ID = re.compile(r"^[0-9a-f]{32}$")
_CHUNK_ID = re.compile(r"^[0-9a-f]{64}$")
_TMP = ".tmp-"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Blob:
    """Where one chunk is stored: its pack, offset and stored length, plain length, codec."""

    pack: str
    offset: int
    length: int
    plain: int
    codec: str


@dataclass(frozen=True)
class Stored:
    """What :meth:`Repository.store` wrote: the chunk list, and the bytes it added."""

    chunks: list[str]
    raw_size: int
    raw_sha256: str
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
        self._index: dict[str, Blob] | None = None

    @classmethod
    def of(cls, catalog_dir: Path) -> Repository:
        return cls(catalog_dir / DIRECTORY)

    def exists(self) -> bool:
        return (self.directory / "config.json").is_file()

    @property
    def chunk_size(self) -> int:
        return int(self._config().get("chunk_size", CHUNK_SIZE))

    def prepare(self, chunk_size: int = CHUNK_SIZE) -> None:
        """Make the repository (0700 directories) with *chunk_size* if it is new."""
        private_dir(self.directory)
        private_dir(self.packs_dir)
        if not self.exists():
            config = {"format": FORMAT, "chunk_size": chunk_size, "hash": "sha256"}
            write_atomic(self.directory / "config.json",
                         json.dumps(config, indent=1).encode() + b"\n", fsync=True)

    def _config(self) -> dict[str, Any]:
        path = self.directory / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "chunk_size": CHUNK_SIZE}
        except (OSError, ValueError) as exc:
            raise VerificationError(f"{path}: repository config is unreadable ({exc})") \
                from None
        size = config.get("chunk_size") if isinstance(config, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or not (
                512 <= size <= 1 << 26 and size & (size - 1) == 0):
            raise VerificationError(f"{path}: repository config is damaged: chunk_size "
                                    "must be a power of two between 512 and 64 MiB")
        return {"format": config.get("format", FORMAT), "chunk_size": size}

    # -- the index ------------------------------------------------------------------

    def index(self) -> dict[str, Blob]:
        """Every stored chunk -> where it is, from the packs' index files."""
        if self._index is None:
            found: dict[str, Blob] = {}
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
              progress: Progress | None = None) -> Stored:
        """Cut *plain* into chunks and write those the repository lacks. Call with the
        catalog lock held; the chunks are durable when it returns."""
        self.prepare()
        index = self.index()
        codec = CODECS[compression]
        total = plain.stat().st_size
        writer = _PackWriter(self)
        chunks: list[str] = []
        whole = hashlib.sha256()
        size = done = 0
        step = self.chunk_size
        try:
            with open(plain, "rb") as src:
                while block := src.read(max(_READ, step)):
                    whole.update(block)
                    view = memoryview(block)
                    for start in range(0, len(block), step):
                        data = view[start:start + step]
                        chunk = hashlib.sha256(data).hexdigest()
                        chunks.append(chunk)
                        blob = index.get(chunk) or writer.add(chunk, bytes(data), codec)
                        index.setdefault(chunk, blob)
                        size += blob.length
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            writer.close()
        except BaseException:
            writer.abandon()
            self._index = None
            raise
        return Stored(chunks, done, whole.hexdigest(), size, writer.added)

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

    def read_into(self, chunks: Iterable[str], out: IO[bytes],
                  progress: Progress | None = None) -> tuple[int, str]:
        """Write the plain bytes of *chunks*, in order, to *out*, each checked against
        its id; (size, sha256) of all of it. VerificationError names a missing or
        damaged chunk. Call inside :meth:`reading`."""
        whole = hashlib.sha256()
        size = 0
        with _Packs(self) as packs:
            for chunk in chunks:
                data = packs.read(chunk)
                whole.update(data)
                out.write(data)
                size += len(data)
                if progress is not None:
                    progress(size, 0)
        return size, whole.hexdigest()

    def check(self, chunks: Iterable[str]) -> dict[str, str]:
        """Rehash every chunk in *chunks* once: chunk id -> problem, for the bad ones."""
        bad: dict[str, str] = {}
        with _Packs(self) as packs:
            for chunk in dict.fromkeys(chunks):
                try:
                    packs.read(chunk)
                except VerificationError as exc:
                    bad[chunk] = str(exc)
        return bad

    # -- collection -----------------------------------------------------------------

    def collect(self, referenced: set[str]) -> Collected:
        """Remove what no manifest references: packs with no referenced chunk, packs
        that interrupted backups left without an index; rewrite packs that are mostly
        garbage. Call with the catalog lock held, *referenced* read under it."""
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

    def _remove_leftovers(self, report: Collected) -> None:
        indexed = {p.stem for p in self._index_files()}
        for path in sorted(self.packs_dir.glob("*/*")):
            if path.name.startswith(_TMP) or (
                    path.suffix == ".pack" and path.stem not in indexed):
                report.bytes_freed += _size(path)
                path.unlink(missing_ok=True)
                report.packs_removed.append(path.name)
                reach("gc:leftover-removed")

    def _collect_pack(self, idx: Path, referenced: set[str], report: Collected) -> None:
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

    def _rewrite(self, live: dict[str, Blob]) -> None:
        """Copy the live chunks of a pack into a new one, durably, before it goes."""
        writer = _PackWriter(self)
        try:
            with _Packs(self) as packs:
                for chunk, blob in live.items():
                    writer.add_stored(chunk, packs.read_stored(blob), blob)
            writer.close()
        except BaseException:
            writer.abandon()
            raise

    def stored_bytes(self) -> int:
        """The repository's size on disk: packs, indexes and config."""
        return sum(_size(p) for p in self.directory.rglob("*") if p.is_file())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_index(path: Path) -> dict[str, Blob]:
    """The chunks pack index *path* names, every entry checked; VerificationError
    names the file when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pack = data["pack"]
        entries = data["blobs"]
        if pack != path.stem or not isinstance(entries, list):
            raise ValueError("it names another pack")
        return {chunk: _blob(pack, chunk, offset, length, plain, codec)
                for chunk, offset, length, plain, codec in entries}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"{path}: pack index is damaged ({exc}); 'dbguard verify "
                                "--all' names the backups it affects") from None


def _blob(pack: str, chunk: Any, offset: Any, length: Any, plain: Any, codec: Any) -> Blob:
    numbers = (offset, length, plain)
    if not (isinstance(chunk, str) and _CHUNK_ID.match(chunk)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                    for n in numbers) and codec in CODECS.values()):
        raise ValueError(f"entry {str(chunk)[:16]!r} is malformed")
    return Blob(pack, offset, length, plain, codec)


class _PackWriter:
    """New chunks into new packs: each written and fsynced, then its index."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.added = 0
        self._pack: str | None = None
        self._fh: IO[bytes] | None = None
        self._entries: list[list[Any]] = []
        self._digest = hashlib.sha256()
        self._offset = 0
        self._tmp: list[Path] = []

    def add(self, chunk: str, data: bytes, codec: str) -> Blob:
        return self.add_stored(chunk, _encode(data, codec), Blob("", 0, 0, len(data), codec))

    def add_stored(self, chunk: str, stored: bytes, like: Blob) -> Blob:
        """Append a chunk already encoded with *like*'s codec."""
        if self._fh is None:
            self._open()
        assert self._fh is not None
        assert self._pack is not None
        self._fh.write(stored)
        self._digest.update(stored)
        blob = Blob(self._pack, self._offset, len(stored), like.plain, like.codec)
        self._entries.append([chunk, blob.offset, blob.length, blob.plain, blob.codec])
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
        self._fh = os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
        self._entries, self._digest, self._offset = [], hashlib.sha256(), 0

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
        index = {"format": FORMAT, "pack": pack, "size": self._offset,
                 "sha256": self._digest.hexdigest(), "blobs": self._entries}
        write_atomic(path.with_suffix(".idx"), json.dumps(index).encode(), fsync=True)
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

    def read_stored(self, blob: Blob) -> bytes:
        fd = self._open.get(blob.pack)
        if fd is None:
            path = self.repository.pack_path(blob.pack)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                raise VerificationError(f"{path}: pack is unreadable ({exc.strerror})") \
                    from None
            self._open[blob.pack] = fd
        data = os.pread(fd, blob.length, blob.offset)
        if len(data) != blob.length:
            raise VerificationError(f"pack {blob.pack} is truncated")
        return data

    def read(self, chunk: str) -> bytes:
        """The plain bytes of *chunk*, checked against its id."""
        blob = self.index.get(chunk)
        if blob is None:
            raise VerificationError(f"chunk {chunk[:16]} is missing from the repository")
        try:
            data = _decode(self.read_stored(blob), blob.codec, blob.plain)
        except (zlib.error, ValueError) as exc:
            raise VerificationError(f"chunk {chunk[:16]} in pack {blob.pack} does not "
                                    f"decompress ({exc})") from None
        except Exception as exc:  # zstandard's own error class
            if isinstance(exc, VerificationError):
                raise
            raise VerificationError(f"chunk {chunk[:16]} in pack {blob.pack} does not "
                                    f"decompress ({exc})") from None
        if hashlib.sha256(data).hexdigest() != chunk:
            raise VerificationError(f"chunk {chunk[:16]} in pack {blob.pack} is damaged "
                                    "(its sha256 differs)")
        return data
