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
      collected.json              the chunk lists and packs the last collection saw
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
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

from dbguard_plugin import locks
from dbguard_plugin.catalog import REPOSITORY_DIR
from dbguard_plugin.catalog.codecs import zstandard
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import ConfigError, VerificationError
from dbguard_plugin.files import fsync_dir, open_private, private_dir, read_small, write_atomic

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
DIRECTORY = REPOSITORY_DIR
#: What the last completed collection saw (chunk lists, packs): see Repository.collect.
_COLLECTED = "collected.json"
#: Per-chunk codecs: the catalog's compression setting -> the codec a chunk is stored with.
CODECS = {"none": "none", "gzip": "zlib", "zstd": "zstd"}
_CODEC_BYTES = ("none", "zlib", "zstd")

_INDEX_MAGIC = b"DBGIDX1\n"
_HEAD = len(_INDEX_MAGIC)
_ENTRY = struct.Struct(">32sQIIB")
_PLACE = struct.Struct(">QIIB")
_CODEC_AT = 48
#: Entries a pack may hold (a ChunkIndex handle is pack number * this + entry).
_PER_PACK = 1 << 24
#: Pieces a pack writer hands the kernel in one writev (Linux's IOV_MAX).
_WRITEV_MAX = 1024
_ID = 32
_PACK_ID = re.compile(r"^[0-9a-f]{32}$")
_TMP = ".tmp-"

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


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
    #: Whether every pack was looked at (else only those written since the last one).
    full: bool = True
    packs_read: int = 0


@dataclass
class ChunkChecks:
    """What a :func:`shared_checks` block read: chunks read, and chunks rehashed."""

    read: int = 0
    hashed: int = 0
    _seen: set[tuple[bytes, str]] = field(default_factory=set, repr=False)

    def needs(self, chunk: bytes, pack: str) -> bool:
        """Count a read of *chunk* from *pack*; whether it still needs its hash checked."""
        self.read += 1
        return (chunk, pack) not in self._seen

    def passed(self, chunk: bytes, pack: str) -> None:
        self.hashed += 1
        self._seen.add((chunk, pack))


_SHARED: ContextVar[ChunkChecks | None] = ContextVar("dbguard_shared_checks", default=None)


@contextlib.contextmanager
def shared_checks() -> Iterator[ChunkChecks]:
    """Within the block, a chunk read again from the same pack is not rehashed: ``verify
    --all`` reassembles every backup, but hashes each stored chunk once. A chunk whose
    hash failed is checked again, and fails again, for every backup that needs it; a
    chunk a collection moved to another pack is checked again there."""
    checks = ChunkChecks()
    token = _SHARED.set(checks)
    try:
        yield checks
    finally:
        _SHARED.reset(token)


class Repository:
    """The chunk store of one catalog (``<catalog>/repository``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.packs_dir = directory / "packs"
        self._index: ChunkIndex | None = None
        #: pack -> why its index cannot be used (see :meth:`_sound_index`)
        self.damaged: dict[str, str] = {}

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
            config = json.loads(read_small(path))
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

    def index(self) -> ChunkIndex:
        """Every stored chunk (raw id) -> where it is, from the packs' index files."""
        if self._index is None:
            # not a bound method: a cycle back to this repository would keep the
            # index alive past a store, until the cycle collector ran
            found = ChunkIndex(functools.partial(_pack_index, self.packs_dir))
            for idx in self._index_files():
                data = self._sound_index(idx)
                if data is not None:
                    found.load(idx.stem, data)
            self._index = found
        return self._index

    def _sound_index(self, idx: Path) -> bytes | None:
        """Pack index *idx*, or None when it is damaged. One bad index must not stop
        every later backup (a bot pauses its orders when its backup fails): its chunks
        count as absent, so the next backup stores them afresh and never needs that
        pack, and a read of a chunk only it held fails naming it. Collection leaves the
        pack alone, since what it holds cannot be known."""
        try:
            return _index_bytes(idx)
        except VerificationError as exc:
            if idx.stem not in self.damaged:
                log.warning("dbguard: %s; new backups store its chunks again", exc)
            self.damaged[idx.stem] = str(exc)
            return None

    def damaged_indexes(self) -> dict[Path, str]:
        """Every pack index that cannot be used, and why (each is read)."""
        found = {}
        for idx in self._index_files():
            try:
                _index_bytes(idx)
            except VerificationError as exc:
                found[idx] = str(exc)
        return found

    def _index_files(self) -> list[Path]:
        return sorted(p for p in self._pack_files()
                      if p.suffix == ".idx" and _PACK_ID.match(p.stem))

    def _pack_files(self) -> list[Path]:
        """Every file in the packs' subdirectories, never through a symlink: a linked
        ``packs`` or ``packs/ab`` is skipped, so nothing outside is read or deleted."""
        if not _real_dir(self.packs_dir):
            return []
        found = []
        for sub in os.scandir(self.packs_dir):
            if sub.is_dir(follow_symlinks=False):
                found += [Path(f.path) for f in os.scandir(sub.path)
                          if f.is_file(follow_symlinks=False)]
        return found

    def pack_path(self, pack: str) -> Path:
        return _pack_file(self.packs_dir, pack, ".pack")

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
        index = self.index()
        if self.damaged:
            # the chunks of a damaged index are stored again, in packs that older
            # backups may then need too (see _sound_index)
            self._forget_collection()
        writer = _PackWriter(self, index, CODECS[compression])
        ids = bytearray()
        total = plain.stat().st_size
        try:
            if content_defined:
                for piece in _content_defined(plain):
                    ids += writer.put(piece)
                    if progress is not None and writer.plain % _BLOCK < len(piece):
                        progress(writer.plain, total)
            else:
                for block in _blocks(plain, self.chunk_size):
                    ids += writer.put_block(block, self.chunk_size)
                    if progress is not None:
                        progress(writer.plain, total)
            chunk_list = writer.put(memoryview(ids), codec="none")
            writer.close()
        except BaseException as exc:
            writer.abandon()
            self._index = None
            if isinstance(exc, OSError) and exc.filename is None:
                # a write or fsync: say which file it was for
                raise OSError(exc.errno, exc.strerror, str(writer.writing)) from exc
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

    def collect(self, chunk_lists: Iterable[str]) -> Collected:
        """Remove what none of *chunk_lists* (those of every manifest) references: packs
        with no referenced chunk, packs that interrupted backups left without an index;
        rewrite packs that are mostly garbage. Call with the catalog lock held, the
        lists read under it. VerificationError when a list cannot be read: nothing can
        then be collected safely.

        When no list was dropped since the last collection (``collected.json``), only
        the packs written since can hold garbage, and only the lists added since can
        reference them: a new pack holds only chunks that no pack held before. So only
        those are read; the rest is as the last collection left it."""
        lists = set(chunk_lists)
        report = Collected()
        if not _real_dir(self.packs_dir):
            return report
        since = self._since_last(lists)
        if since is None:
            # a full collection: forget the last one first, so that a crash part way
            # (after a repack wrote old chunks into a new pack) leaves the next prune a
            # full collection too
            self._forget_collection()
            new_lists, packs = lists, None
        else:
            new_lists, packs = since
        referenced = self.referenced_by(new_lists)
        report.full = packs is None
        with os.fdopen(open_private(self.directory / "lock"), "r+b") as fh:
            if not locks.try_lock(fh):
                report.deferred = "a restore or verify is reading the repository"
                return report
            self._remove_leftovers(report)
            for idx in self._index_files():
                if packs is None or idx.stem in packs:
                    report.packs_read += 1
                    self._collect_pack(idx, referenced, report)
        self._index = None
        self._remember_collection(lists)
        return report

    def _since_last(self, lists: set[str]) -> tuple[set[str], set[str]] | None:
        """The chunk lists and packs added since the last collection, or None for a full
        one: no record of it, a list dropped since, or a record that does not fit."""
        last = self._last_collection()
        if last is None or not last[0] <= lists:
            return None
        packs = self._packs_since(last[1], last[2])
        return None if packs is None else (lists - last[0], packs)

    def _last_collection(self) -> tuple[set[str], set[str], int] | None:
        """The chunk lists and packs the last completed collection saw, and when, or
        None."""
        path = self.directory / _COLLECTED
        try:
            written = path.stat().st_mtime_ns
            state = json.loads(read_small(path))
            lists, packs = set(state["lists"]), set(state["packs"])
        except (OSError, ValueError, TypeError, KeyError):
            return None  # none yet, or unreadable: collect in full
        if not all(isinstance(x, str) for x in lists | packs):
            return None
        return lists, packs, written

    def _forget_collection(self) -> None:
        """Make the next collection a full one, durably: an incremental one would take a
        new pack holding chunks that older backups need for garbage."""
        path = self.directory / _COLLECTED
        if path.exists():
            path.unlink(missing_ok=True)
            fsync_dir(self.directory)

    def _packs_since(self, known: set[str], written: int) -> set[str] | None:
        """The packs written since the last collection, or None when one it did not list
        is older than its record: the record is not the one collection wrote (edited,
        put back from a copy), and trusting it could take every pack for new garbage."""
        since = [idx for idx in self._index_files() if idx.stem not in known]
        if any(_mtime(idx) < written for idx in since):
            log.warning("dbguard: %s does not list packs older than itself; collecting "
                        "in full", self.directory / _COLLECTED)
            return None
        return {idx.stem for idx in since}

    def _remember_collection(self, lists: set[str]) -> None:
        state = {"lists": sorted(lists),
                 "packs": sorted(idx.stem for idx in self._index_files())}
        write_atomic(self.directory / _COLLECTED, json.dumps(state).encode(), fsync=True)

    def referenced_by(self, chunk_lists: Iterable[str]) -> set[bytes]:
        """The chunk lists and every chunk they name (VerificationError when one of the
        lists cannot be read: nothing can then be collected safely)."""
        lists = {_raw_id(chunk_list): chunk_list for chunk_list in chunk_lists}
        referenced = set(lists)
        with _Packs(self, self._index_of(lists)) as packs:
            for raw, chunk_list in lists.items():
                referenced.update(_ids(packs.read(raw), chunk_list))
        return referenced

    def _index_of(self, chunks: Iterable[bytes]) -> ChunkIndex:
        """An index of only *chunks*: a collection reads the chunk lists, and the whole
        index of a 1 GiB database (262,144 chunks) would double its memory."""
        wanted = set(chunks)
        found = ChunkIndex()
        for idx in self._index_files():
            data = self._sound_index(idx)
            if data is None:
                continue
            hits = [at for at in range(_HEAD, len(data), _ENTRY.size)
                    if data[at:at + _ID] in wanted]
            if hits:
                number = found.open_pack(idx.stem, data)
                for at in hits:
                    found.add(data[at:at + _ID], number, (at - _HEAD) // _ENTRY.size)
        return found

    def _remove_leftovers(self, report: Collected) -> None:
        indexed = {p.stem for p in self._index_files()}
        for path in sorted(self._pack_files()):
            if path.name.startswith(_TMP) or (
                    path.suffix == ".pack" and path.stem not in indexed):
                report.bytes_freed += _size(path)
                path.unlink(missing_ok=True)
                report.packs_removed.append(path.name)
                reach("gc:leftover-removed")

    def _collect_pack(self, idx: Path, referenced: set[bytes], report: Collected) -> None:
        data = self._sound_index(idx)
        if data is None:
            return  # what it holds cannot be known: it stays
        # the entries as tuples, not Blobs: this runs over every pack after each backup
        entries = list(_ENTRY.iter_unpack(memoryview(data)[_HEAD:]))
        live = [e for e in entries if e[0] in referenced]
        stored = sum(e[2] for e in entries)
        dead = stored - sum(e[2] for e in live)
        if live and dead <= REPACK_SHARE * stored:
            return
        if live:
            name = idx.stem
            self._rewrite({e[0]: Blob(name, e[1], e[2], e[3], _CODEC_BYTES[e[4]])
                           for e in live})
            report.packs_rewritten.append(name)
            reach("gc:repacked")
        idx.unlink()
        fsync_dir(idx.parent)
        reach("gc:index-removed")
        self.pack_path(idx.stem).unlink(missing_ok=True)
        report.bytes_freed += dead
        if not live:
            report.packs_removed.append(idx.stem)

    def _rewrite(self, live: dict[bytes, Blob]) -> None:
        """Copy the live chunks of a pack into a new one, durably, before it goes."""
        writer = _PackWriter(self, ChunkIndex(), "none")
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


def _blocks(path: Path, step: int) -> Iterator[memoryview]:
    """*path* a block at a time, each a whole number of *step*-byte chunks (the last
    one may end short)."""
    with open(path, "rb", buffering=0) as src:
        while block := src.read(max(_BLOCK, step)):
            yield memoryview(block)


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


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


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


def _index_bytes(path: Path) -> bytes:
    """Pack index *path* as read, checked; VerificationError names the file when it is
    damaged (a wrong header, a torn entry, an unknown codec)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"{path}: pack index is unreadable ({exc.strerror})") \
            from None
    if not data.startswith(_INDEX_MAGIC) or (len(data) - _HEAD) % _ENTRY.size:
        raise VerificationError(f"{path}: pack index is damaged; 'dbguard verify --all' "
                                "names the backups it affects")
    codecs = data[_HEAD + _CODEC_AT::_ENTRY.size]
    if codecs and max(codecs) >= len(_CODEC_BYTES):
        raise VerificationError(f"{path}: pack index is damaged (codec {max(codecs)})")
    return data


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _pack_file(packs_dir: Path, pack: str, suffix: str) -> Path:
    if not _PACK_ID.match(pack):
        raise VerificationError(f"{packs_dir}: pack id {pack!r} is not one dbguard wrote")
    return packs_dir / pack[:2] / f"{pack}{suffix}"


def _pack_index(packs_dir: Path, pack: str) -> bytes:
    return _index_bytes(_pack_file(packs_dir, pack, ".idx"))


def read_index(path: Path) -> dict[bytes, Blob]:
    """The chunks pack index *path* names (see :func:`_index_bytes` for its errors)."""
    index = ChunkIndex()
    index.load(path.stem, _index_bytes(path))
    return {chunk: index[chunk] for chunk in index}


class ChunkIndex:
    """Where each stored chunk is, in about 200 bytes a chunk (a ``dict`` of
    :class:`Blob` took 700: a 1 GiB database has 262,144 chunks). A chunk's id maps to
    one int naming its pack and its entry in that pack's index bytes, which are kept as
    read and unpacked only when the chunk is read. A pack this process just wrote lets
    go of its entries (:meth:`written`) and reads them back from its index file if a
    chunk in it is looked up again."""

    def __init__(self, read: Callable[[str], bytes] | None = None) -> None:
        self._where: dict[bytes, int] = {}
        self._packs: list[str] = []
        self._entries: list[bytes | bytearray | None] = []
        self._read = read

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._where)

    def __contains__(self, chunk: object) -> bool:
        return chunk in self._where

    def __getitem__(self, chunk: bytes) -> Blob:
        blob = self.get(chunk)
        if blob is None:
            raise KeyError(chunk.hex())
        return blob

    def get(self, chunk: bytes) -> Blob | None:
        handle = self._where.get(chunk)
        return None if handle is None else self.blob(handle)

    def stored_length(self, handle: int) -> int:
        return self.place(handle)[1]

    def handle(self, chunk: bytes) -> int | None:
        return self._where.get(chunk)

    def blob(self, handle: int) -> Blob:
        offset, length, plain, codec = self.place(handle)
        return Blob(self.pack(handle), offset, length, plain, _CODEC_BYTES[codec])

    def pack(self, handle: int) -> str:
        return self._packs[handle // _PER_PACK]

    def place(self, handle: int) -> tuple[int, int, int, int]:
        """(offset, stored length, plain length, codec number) of chunk *handle*."""
        number, entry = divmod(handle, _PER_PACK)
        return _PLACE.unpack_from(self._entries_of(number), _HEAD + entry * _ENTRY.size + _ID)

    def _entries_of(self, number: int) -> bytes | bytearray:
        entries = self._entries[number]
        if entries is None:
            if self._read is None:
                raise VerificationError(f"pack {self._packs[number]}: its index was let go")
            entries = self._entries[number] = self._read(self._packs[number])
        return entries

    def written(self, number: int) -> None:
        """Pack *number* is on disk with its index: let go of its entries."""
        if self._read is not None:
            self._entries[number] = None

    def load(self, pack: str, data: bytes) -> None:
        """Add the chunks of pack index *data* (checked by :func:`_index_bytes`)."""
        number = self.open_pack(pack, data)
        size, base = _ENTRY.size, number * _PER_PACK
        count = (len(data) - _HEAD) // size
        # one C-level update: per-entry Python would cost a second at 1 GiB
        self._where.update(zip(
            [data[at:at + _ID] for at in range(_HEAD, len(data), size)],
            range(base, base + count), strict=True))

    def open_pack(self, pack: str, entries: bytes | bytearray) -> int:
        """Register a pack whose *entries* (a writer's growing bytearray, or an index
        file's bytes) start with the index header; its number for :meth:`add`."""
        self._packs.append(pack)
        self._entries.append(entries)
        return len(self._packs) - 1

    def add(self, chunk: bytes, number: int, entry: int) -> int:
        handle = number * _PER_PACK + entry
        self._where[chunk] = handle
        return handle


class _PackWriter:
    """New chunks into new packs: each written and fsynced, then its index."""

    def __init__(self, repository: Repository, index: ChunkIndex, codec: str) -> None:
        self.repository = repository
        self.index = index
        self.codec = codec
        self.added = self.referenced = self.plain = 0
        self._pack: str | None = None
        self._fd = -1
        self._number = 0
        self._entries = bytearray(_INDEX_MAGIC)
        self._offset = 0
        self._pending: list[bytes | memoryview] = []
        self._tmp: list[Path] = []

    def put(self, data: memoryview, codec: str | None = None) -> bytes:
        """Chunk *data*: stored unless the repository has it already; its raw id."""
        chunk = hashlib.sha256(data).digest()
        self._put(chunk, data, codec or self.codec)
        self._flush()
        return chunk

    def put_block(self, block: memoryview, step: int) -> bytes:
        """Cut *block* into *step*-byte chunks and :meth:`put` each; their ids, joined.
        Hashing a block's chunks in one comprehension and writing its new chunks with
        one writev keeps Python's own work per 4 KiB chunk small."""
        sha256 = hashlib.sha256
        starts = range(0, len(block), step)
        ids = [sha256(block[at:at + step]).digest() for at in starts]
        codec = self.codec
        for at, chunk in zip(starts, ids, strict=True):
            self._put(chunk, block[at:at + step], codec)
        self._flush()
        return b"".join(ids)

    def _put(self, chunk: bytes, data: memoryview, codec: str) -> None:
        handle = self.index.handle(chunk)
        if handle is None:
            stored = data if codec == "none" else _encode(bytes(data), codec)
            self.append(chunk, stored, len(data), codec)
            self.referenced += len(stored)
        else:
            self.referenced += self.index.stored_length(handle)
        self.plain += len(data)

    def append(self, chunk: bytes, stored: bytes | memoryview, plain: int,
               codec: str) -> None:
        """Append a chunk already encoded with *codec* (written at the next flush)."""
        if self._pack is None:
            self._open()
        entry = (len(self._entries) - _HEAD) // _ENTRY.size
        self._pending.append(stored)
        self._entries += _ENTRY.pack(chunk, self._offset, len(stored), plain,
                                     _CODEC_BYTES.index(codec))
        self.index.add(chunk, self._number, entry)
        self._offset += len(stored)
        self.added += len(stored)
        if self._offset >= PACK_TARGET or entry + 1 >= _PER_PACK:
            self._finish()
        elif len(self._pending) >= _WRITEV_MAX:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            _write_all(self._fd, self._pending)
            self._pending = []

    def _open(self) -> None:
        self._pack = secrets.token_hex(16)
        path = self.repository.pack_path(self._pack)
        private_dir(path.parent)
        tmp = path.with_name(f"{_TMP}{path.name}")
        self._tmp.append(tmp)
        self._fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self._entries, self._offset = bytearray(_INDEX_MAGIC), 0
        self._number = self.index.open_pack(self._pack, self._entries)

    def _finish(self) -> None:
        """Make the open pack durable: pack fsynced and renamed, then its index."""
        pack = self._pack
        assert pack is not None
        self._flush()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd, self._pack = -1, None
        path = self.repository.pack_path(pack)
        os.replace(path.with_name(f"{_TMP}{path.name}"), path)
        reach("repository:pack-written")
        write_atomic(path.with_suffix(".idx"), bytes(self._entries), fsync=True)
        fsync_dir(path.parent)
        reach("repository:indexed")
        self.index.written(self._number)

    @property
    def writing(self) -> Path:
        """The pack file being written (the packs directory before the first)."""
        return self._tmp[-1] if self._tmp else self.repository.packs_dir

    def close(self) -> None:
        if self._pack is not None:
            self._finish()

    def abandon(self) -> None:
        """After a failure: remove the unfinished pack (finished ones stay, unreferenced,
        until the next collection)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd, self._pack, self._pending = -1, None, []
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


def _write_all(fd: int, pieces: list[bytes | memoryview]) -> None:
    """Write *pieces* in order, a writev of at most 1,024 at a time where there is one,
    short writes resumed (a full disk raises ENOSPC on the next try)."""
    writev = getattr(os, "writev", None)  # not on Windows
    for first in range(0, len(pieces), _WRITEV_MAX):
        batch = pieces[first:first + _WRITEV_MAX]
        written = 0 if writev is None else writev(fd, batch)
        if written < sum(len(p) for p in batch):
            rest = b"".join(batch)[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


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

    def __init__(self, repository: Repository, index: ChunkIndex | None = None) -> None:
        self.repository = repository
        self.index = repository.index() if index is None else index
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
        return self.checked(chunk, self.index.blob(self._handle(chunk)), None)

    def _handle(self, chunk: bytes) -> int:
        handle = self.index.handle(chunk)
        if handle is None:
            damaged = "; ".join(self.repository.damaged.values())
            raise VerificationError(f"chunk {chunk.hex()[:16]} is missing from the "
                                    "repository" + (f" ({damaged})" if damaged else ""))
        return handle

    def checked(self, chunk: bytes, blob: Blob, stored: bytes | None,
                shared: ChunkChecks | None = None) -> bytes:
        """*chunk*'s plain bytes from its *stored* bytes (read here when None)."""
        raw = self.read_stored(blob) if stored is None else stored
        try:
            data = _decode(raw, blob.codec, blob.plain)
        except Exception as exc:  # zlib.error, zstandard's own error class
            raise VerificationError(f"chunk {chunk.hex()[:16]} in pack {blob.pack} does "
                                    f"not decompress ({exc})") from None
        _check_shared(chunk, blob.pack, data, shared)
        return data

    def read_all(self, chunks: list[bytes]) -> Iterator[bytes]:
        """The plain bytes of *chunks* in order: runs stored back to back in one pack
        are read with one pread of up to 1 MiB, each chunk checked, and a run stored
        plain is given back as the one block it was read as."""
        shared = _SHARED.get()
        i = 0
        while i < len(chunks):
            pack, run = self._run(chunks, i)
            start = run[0][0]
            size = run[-1][0] + run[-1][1] - start
            block = os.pread(self._fd(pack), size, start)
            if len(block) != size:
                raise VerificationError(f"pack {pack} is truncated")
            if all(codec == 0 for _, _, _, codec in run):
                view = memoryview(block)
                for j, (offset, length, _, _) in enumerate(run):
                    at = offset - start
                    _check_shared(chunks[i + j], pack, view[at:at + length], shared)
                yield block
            else:
                for j, (offset, length, plain, codec) in enumerate(run):
                    at = offset - start
                    blob = Blob(pack, offset, length, plain, _CODEC_BYTES[codec])
                    yield self.checked(chunks[i + j], blob, block[at:at + length], shared)
            i += len(run)

    def _run(self, chunks: list[bytes], i: int) -> tuple[str, list[tuple[int, int, int, int]]]:
        """The pack and places (offset, stored length, plain length, codec number) of
        chunks[i:] stored back to back in one pack, up to 1 MiB: a pack's entries are in
        the order its chunks were written, so a run is a run of consecutive handles."""
        where, place = self.index.handle, self.index.place
        first = self._handle(chunks[i])
        run = [place(first)]
        size = run[0][1]
        for j in range(i + 1, len(chunks)):
            if size >= _BLOCK or where(chunks[j]) != first + j - i:
                break
            run.append(place(first + j - i))
            size += run[-1][1]
        return self.index.pack(first), run


def _check_shared(chunk: bytes, pack: str, data: bytes | memoryview,
                  shared: ChunkChecks | None) -> None:
    if shared is None:
        _check_hash(chunk, pack, data)
    elif shared.needs(chunk, pack):
        _check_hash(chunk, pack, data)
        shared.passed(chunk, pack)


def _check_hash(chunk: bytes, pack: str, data: bytes | memoryview) -> None:
    if hashlib.sha256(data).digest() != chunk:
        raise VerificationError(f"chunk {chunk.hex()[:16]} in pack {pack} is "
                                "damaged (its sha256 differs)")
