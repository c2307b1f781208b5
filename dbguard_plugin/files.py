"""Private files and directories: 0600 and 0700, written atomically, never via symlinks."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from dbguard_plugin.crashpoints import rename_fault
from dbguard_plugin.errors import UnsafePathError

FILE_MODE = 0o600
DIR_MODE = 0o700

#: What a write answers when its disk, its quota or the file size limit leaves no room.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def private_dir(path: Path) -> Path:
    """Create *path* (0700) if needed and refuse one that is a symlink or not a directory."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        _refuse_unless_real_dir(path)
    except FileNotFoundError:
        if path.parent == path:
            raise
        # Missing parents are created private too. Another process may be creating them
        # at this very moment (a bot and a prune starting together), so the parent is
        # made or found, then this one tried once more.
        private_dir(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            _refuse_unless_real_dir(path)
    return path


def _refuse_unless_real_dir(path: Path) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            f"{path} is a symlink; dbguard keeps its files only in a real directory: "
            "remove the link or point the configuration at the real directory"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} exists and is not a directory: move it away")


def open_private(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open *path* 0600 without following a symlink; return the descriptor."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                       FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(f"{path} is a symlink; dbguard will not follow it") from exc
        raise


#: The most a settings file or a manifest may hold: far above any real one, far below
#: what would exhaust a small VPS's memory (``--config /dev/zero`` read until it did).
SMALL_FILE = 16 << 20


class NotAFile(ValueError):
    """The path is a FIFO, a device, a socket or a file too large for what it should be;
    the message says which and names the path."""


def read_small(path: Path, limit: int = SMALL_FILE, *, follow: bool = True) -> bytes:
    """The bytes of the regular file *path*, at most *limit*: NotAFile for anything else.

    Opened non-blocking, so a FIFO without a writer is refused instead of hanging the
    caller, and checked by its descriptor before a byte is read (a device like
    ``/dev/zero`` never ends); the null device reads as an empty file. A directory
    raises IsADirectoryError; without *follow* (a file dbguard writes back) a symlink
    raises UnsafePathError, as :func:`open_private` does, and the null device NotAFile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    fd = open_private(path, flags) if not follow else os.open(
        path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        _refuse_unless_regular(path, os.fstat(fd), null=follow)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise NotAFile(f"{path}: larger than {limit >> 20} MiB, far more than it should hold")
    return data


def _refuse_unless_regular(path: Path, st: os.stat_result, null: bool) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if stat.S_ISREG(st.st_mode) or (null and _is_null_device(st)):
        return  # with *null*, --config /dev/null: an empty file, on purpose
    raise NotAFile(f"{path}: is not a regular file (a FIFO, a device or a socket)")


def _is_null_device(st: os.stat_result) -> bool:
    try:
        device = os.stat(os.devnull)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (device.st_dev, device.st_ino)


def datasync(fd: int) -> None:
    """fdatasync where the platform has it (the data, not the metadata), else fsync."""
    getattr(os, "fdatasync", os.fsync)(fd)


_SCRATCH = itertools.count()


def write_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Replace *path* with *data*: readers see the old file or the new, never half.

    With *fsync*, the data and then the directory entry are on disk when this returns.
    """
    # pid and a per-process counter: two writers of one file in one process (two Guards
    # on one database, a status thread beside the caller) never share a scratch name.
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}-{next(_SCRATCH)}")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def replace(src: Path, dst: Path, attempts: int = 8) -> None:
    """os.replace, retried with bounded backoff on PermissionError.

    On Windows a rename fails while another process (an antivirus, an indexer, a reader)
    has either file open; that passes within moments. Only files dbguard itself wrote
    are renamed this way: never a database that may be open.
    """
    delay = 0.01
    for attempt in range(attempts):
        try:
            rename_fault()
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in *path* durable (where the platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1, sort_keys=True).encode() + b"\n")


def append_line(path: Path, line: str) -> None:
    """Append one line with O_APPEND, so concurrent writers never interleave a line."""
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
