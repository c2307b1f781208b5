"""A consistent copy of a live SQLite file at file-copy speed: a read snapshot plus its WAL.

SQLite's backup API moves every page through two pagers and costs several times a plain
file copy. A read transaction already pins a consistent state, and that state can be read
from the files themselves:

* rollback-journal modes: a reader's SHARED lock keeps every writer out of the database
  file until it ends, so the file's first ``page_count`` pages *are* the snapshot;
* WAL mode: the snapshot is the database file overlaid with the newest copy of each page
  in WAL frames ``1..mxFrame``. The snapshot is pinned while a second connection holds
  the WAL write lock for a moment, so ``mxFrame`` (read from the wal-index in ``-shm``)
  is exactly the snapshot's. While the read transaction lasts, a checkpoint may only
  write frames at or below the reader's mark into the database file, and every such page
  is overwritten by the overlay; the WAL is never restarted under a reader on slots 1+,
  and a reader on slot 0 (WAL fully checkpointed) keeps every checkpoint out.

Anything unexpected (no ``-shm`` file, a wal-index in another layout, salts that do not
match) raises :class:`SnapshotUnavailable`, and the caller uses the backup API instead.
The copy is verified afterwards like any other (quick_check, facts, sha256).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

#: progress(done_pages, total_pages)
Progress = Callable[[int, int], None]

_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_HEADER = 48  # one WalIndexHdr; the wal-index keeps two copies, then WalCkptInfo
_SHM_VERSION = 3007000
_WAL_READ = 8 << 20


# SQLite's locks are POSIX record locks, and a process loses ALL its locks on a file
# when it closes ANY descriptor of that file. Closing our own descriptor of the database
# or its -shm while the read transaction is open would silently drop that transaction's
# read-mark lock (and the pinning write lock), letting a checkpoint overwrite pages the
# snapshot still needs. So descriptors are opened once and closed only after every
# SQLite connection of this process is closed (release_readers()).
_READERS: dict[Path, int] = {}


def _reader(path: Path) -> int:
    fd = _READERS.get(path)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise SnapshotUnavailable(f"{path}: {exc.strerror}") from None
        _READERS[path] = fd
    return fd


def release_readers() -> None:
    """Close the descriptors :func:`_reader` opened; only with no SQLite connection open."""
    while _READERS:
        os.close(_READERS.popitem()[1])


def room_needed(size: int) -> int:
    """Free space a copy of *size* bytes asks for: the copy, a sixteenth more, and 16 MiB
    (SQLite's own scratch space and the catalog's small files while it is written)."""
    return size + (size >> 4) + (16 << 20)


class SnapshotUnavailable(Exception):
    """The file-level snapshot cannot be taken here; use the backup API."""


def copy_snapshot(
    source: Path,
    src: sqlite3.Connection,
    dest_fd: int,
    *,
    journal_mode: str,
    page_size: int,
    page_count: int,
    wal_index: WalIndex | None = None,
    chunk: Callable[[int, int], None] | None = None,
    chunk_pages: int = 2048,
) -> None:
    """Write the snapshot that *src*'s open read transaction sees into *dest_fd*.

    For WAL databases *wal_index* is what :func:`pinned_read` read while it started that
    transaction; *chunk(done, total)* runs after each 8 MiB.
    """
    size = page_size * page_count
    frames: dict[int, int] = {}
    if journal_mode == "wal":
        if wal_index is None:
            raise SnapshotUnavailable(f"{source}: WAL snapshot was not pinned")
        if wal_index.mx_frame and wal_index.pages != page_count:
            raise SnapshotUnavailable(f"{source}: wal-index and snapshot sizes differ")
        frames = _wal_pages(source, wal_index, page_size, page_count)
    copied = _copy_file(source, dest_fd, size, page_size * max(1, chunk_pages), page_count,
                        chunk)
    if copied < size and any(
        pgno not in frames for pgno in range(copied // page_size + 1, page_count + 1)
    ):
        raise SnapshotUnavailable(f"{source}: shorter than its snapshot and not in the WAL")
    if frames:
        _overlay(source, dest_fd, frames, page_size)
    if copied < size and chunk is not None:
        # The pages past the file's end came from the WAL: the copy is complete now, and
        # its progress says so (it stopped short where the main file ended).
        chunk(page_count, page_count)
    os.ftruncate(dest_fd, size)
    if journal_mode == "wal":
        # A backup is one self-contained file: mark it rollback-journal (header bytes
        # 18 and 19, the file format versions, are 2 for WAL and 1 for legacy).
        os.pwrite(dest_fd, b"\x01\x01", 18)


class WalIndex(NamedTuple):
    """The wal-index header fields a snapshot needs."""

    mx_frame: int
    pages: int
    backfill: int
    salt: bytes


def pinned_read(
    source: Path, source_uri: str, src: sqlite3.Connection, busy_timeout: float
) -> WalIndex:
    """Start *src*'s read transaction while a second connection holds the write lock.

    No commit can land between the start of the snapshot and the read of the wal-index,
    so its ``mxFrame`` is the snapshot's; the write lock is held for about a millisecond,
    not for the copy.
    """
    writer = sqlite3.connect(source_uri, uri=True, timeout=busy_timeout, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return read_wal_index(source)
        finally:
            writer.execute("ROLLBACK")
    finally:
        writer.close()


def read_wal_index(source: Path) -> WalIndex:
    """The header of *source*'s wal-index, or SnapshotUnavailable."""
    shm = Path(f"{source}-shm")
    head = os.pread(_reader(shm), 2 * _SHM_HEADER + 4, 0)
    if len(head) < 2 * _SHM_HEADER + 4 or head[:_SHM_HEADER] != head[_SHM_HEADER:2 * _SHM_HEADER]:
        raise SnapshotUnavailable(f"{shm}: wal-index header not readable")
    version, _unused, _change, is_init, _big_end, _page, mx_frame, npage = struct.unpack(
        "=IIIBBHII", head[:24]
    )
    if version != _SHM_VERSION or not is_init:
        raise SnapshotUnavailable(f"{shm}: unknown wal-index version {version}")
    (backfill,) = struct.unpack("=I", head[2 * _SHM_HEADER:2 * _SHM_HEADER + 4])
    return WalIndex(mx_frame, npage, backfill, head[32:40])


def _wal_pages(
    source: Path, index: WalIndex, page_size: int, page_count: int
) -> dict[int, int]:
    """Page number -> offset of its newest image in WAL frames 1..mxFrame of the snapshot."""
    mx_frame, _pages, backfill, salt = index
    if mx_frame == 0 or backfill >= mx_frame:
        # Everything the snapshot needs is in the database file, and no checkpoint can
        # change it while the reader holds its slot (see the module docstring).
        return {}
    wal = Path(f"{source}-wal")
    frame_size = _FRAME_HEADER + page_size
    pages: dict[int, int] = {}
    fd = _reader(wal)
    header = os.pread(fd, _WAL_HEADER, 0)
    if len(header) < _WAL_HEADER or header[16:24] != salt:
        raise SnapshotUnavailable(f"{wal}: salt differs from the wal-index")
    (wal_page_size,) = struct.unpack(">I", header[8:12])
    if wal_page_size != page_size:
        raise SnapshotUnavailable(f"{wal}: page size {wal_page_size} != {page_size}")
    per_read = max(1, _WAL_READ // frame_size)
    frame = 1
    while frame <= mx_frame:
        count = min(per_read, mx_frame - frame + 1)
        base = _WAL_HEADER + (frame - 1) * frame_size
        block = os.pread(fd, count * frame_size, base)
        if len(block) < count * frame_size:
            raise SnapshotUnavailable(f"{wal}: shorter than its {mx_frame} frames")
        for i in range(count):
            at = i * frame_size
            if block[at + 8:at + 16] != salt:
                raise SnapshotUnavailable(f"{wal}: frame {frame + i} has another salt")
            (pgno,) = struct.unpack_from(">I", block, at)
            if pgno <= page_count:
                pages[pgno] = base + at + _FRAME_HEADER
        frame += count
    return pages


def _copy_file(
    source: Path, dest_fd: int, size: int, step: int, page_count: int,
    chunk: Callable[[int, int], None] | None,
) -> int:
    page_size = size // page_count if page_count else 1
    fd = _reader(source)
    done = 0
    while done < size:
        want = min(step, size - done)
        moved = _copy_range(fd, dest_fd, done, want)
        if moved == 0:
            break  # the file ends before the snapshot does: the rest is in the WAL
        done += moved
        if chunk is not None:
            chunk(done // page_size, page_count)
    return done


def _copy_range(src_fd: int, dest_fd: int, offset: int, count: int) -> int:
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            return int(copy_file_range(src_fd, dest_fd, count, offset, offset))
        except OSError:
            pass  # another filesystem or kernel without it: copy through user space
    data = os.pread(src_fd, count, offset)
    os.pwrite(dest_fd, data, offset)
    return len(data)


def _overlay(source: Path, dest_fd: int, pages: dict[int, int], page_size: int) -> None:
    fd = _reader(Path(f"{source}-wal"))
    for pgno, offset in pages.items():
        image = os.pread(fd, page_size, offset)
        if len(image) != page_size:
            raise SnapshotUnavailable(f"{source}-wal: frame for page {pgno} is short")
        os.pwrite(dest_fd, image, (pgno - 1) * page_size)


# The copy runs in a child process, started as a plain script (stdlib only, no package
# import). SQLite's locks are POSIX record locks, which a process loses on *every* file
# descriptor of a file when it closes *any* one: reading the database, -wal and -shm
# files through descriptors of our own inside a bot's process could silently drop the
# bot's own locks. In a child, closing them touches no lock but the child's.

def _report(*fields: object) -> None:
    print(*fields, flush=True)


def main(argv: list[str]) -> int:
    """Child entry point: ``snapshot.py URI SOURCE DEST BUSY_TIMEOUT STEP_PAGES [scratch]``.

    With ``scratch`` the copy is not flushed as it grows: it is read once (its chunks
    go into the repository, fsynced there) and deleted, most of it before the kernel
    would write it back at all.

    stdout lines: ``progress DONE TOTAL`` after each step, each answered by a line on stdin
    before the copy goes on (so the parent's crash points and progress stay in step, and
    the copy stops when the parent is gone); then ``done MODE`` (exit 0), ``unavailable
    REASON`` (exit 3: use the backup API) or ``nospace NEED FREE`` (exit 4).
    """
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an error, not a kill
    uri, source, dest = argv[0], Path(argv[1]), Path(argv[2])
    busy_timeout, step_pages = float(argv[3]), int(argv[4])
    flush = argv[5:6] != ["scratch"]
    src = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    try:
        mode, index = _begin_read(src, source, uri, busy_timeout)
        page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(src.execute("PRAGMA page_count").fetchone()[0])
        need = page_size * page_count
        free = shutil.disk_usage(dest.parent).free
        if free < room_needed(need):
            _report("nospace", need, free)
            return 4
        _copy_to(dest, source, src, step_pages, journal_mode=mode, page_size=page_size,
                 page_count=page_count, wal_index=index, flush=flush)
        src.execute("COMMIT")
        _report("done", mode)
        return 0
    except SnapshotUnavailable as exc:
        _report("unavailable", exc)
        return 3
    except sqlite3.Error as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the copy's disk is full, a file size limit, an I/O error
        print(f"{exc.filename or dest}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except _ParentGone:
        return 5
    finally:
        src.close()
        release_readers()


def _begin_read(src: sqlite3.Connection, source: Path, uri: str,
                busy_timeout: float) -> tuple[str, WalIndex | None]:
    """Start the read transaction the copy is taken under: (journal mode, WAL index)."""
    mode = str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    index = None
    if mode == "wal":
        index = pinned_read(source, uri, src, busy_timeout)
    else:
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if str(src.execute("PRAGMA journal_mode").fetchone()[0]).lower() != mode:
        raise SnapshotUnavailable(f"{source}: journal mode changed while starting")
    return mode, index


def _copy_to(dest: Path, source: Path, src: sqlite3.Connection, step_pages: int, *,
             journal_mode: str, page_size: int, page_count: int,
             wal_index: WalIndex | None, flush: bool = True) -> None:
    """Copy the snapshot into *dest*, reporting each chunk and waiting for the parent."""
    fd = os.open(dest, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        def chunk(done: int, total: int) -> None:
            # Flushing as the copy grows keeps the bot's own commit fsyncs from
            # queueing behind one large flush at the end.
            if flush:
                getattr(os, "fdatasync", os.fsync)(fd)
            _report("progress", done, total)
            if not sys.stdin.readline():
                raise _ParentGone

        copy_snapshot(source, src, fd, journal_mode=journal_mode, page_size=page_size,
                      page_count=page_count, wal_index=wal_index, chunk=chunk,
                      chunk_pages=step_pages)
    finally:
        os.close(fd)


class _ParentGone(Exception):
    """stdin closed: the process that wanted the copy is gone."""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
