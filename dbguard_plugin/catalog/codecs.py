"""How a backup's data file is stored: its compression, its suffix and its digest.

The one table of compressions and file suffixes, and the streams that write and read
them, for every engine: a SQLite copy is compressed after it is checked, a server dump
as it streams in, and both are read back the same way.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

from dbguard_plugin.errors import ConfigError

#: Read and write in pieces of this size: constant memory for any backup.
CHUNK = 1 << 20
COMPRESSIONS = ("none", "gzip", "zstd")
#: The data file suffix each compression adds after the engine's own (.sqlite, .sql ...)
SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def zstandard() -> Any:
    """The zstandard module, or ConfigError saying how to get it."""
    try:
        # why here: an optional extra, needed only where zstd is configured or found
        import zstandard
    except ImportError:
        raise ConfigError(
            "compression = 'zstd' needs the zstandard package: "
            "pip install 'dbguard-plugin[zstd]', or set compression to gzip or none"
        ) from None
    return zstandard


def compressing(out: Any, compression: str) -> Any:
    """A writer that compresses into *out* (gzip or zstd); closing it leaves *out* open."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
    return zstandard().ZstdCompressor(level=3).stream_writer(out, closefd=False)


def decompressing(src: Any, compression: str) -> Any:
    """A reader of the plain content of the stored stream *src* (*src* itself for none)."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=src, mode="rb")
    if compression == "zstd":
        return zstandard().ZstdDecompressor().stream_reader(src)
    return src


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of *path*, read in constant memory."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
