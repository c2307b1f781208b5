"""Running the servers' own tools: dump streamed to a file, archives piped into them.

A dump is read from the tool's stdout in large chunks and written, hashed (and, for
MariaDB, compressed) in the same pass, so a backup costs one read of the tool's output
and no second pass over the file. stderr goes to a private temporary file (a pipe could
fill and stall the tool) and is scrubbed of the password before any message shows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dbguard_plugin.catalog.codecs import CHUNK, compressing, decompressing
from dbguard_plugin.engines.backup import BackupError, Progress
from dbguard_plugin.engines.server.credentials import scrub
from dbguard_plugin.engines.server.params import ServerParams
from dbguard_plugin.errors import ConfigError, DbGuardError
from dbguard_plugin.files import datasync


class ToolError(DbGuardError):
    """A server tool failed; the message carries its scrubbed stderr."""


#: prctl(2) option: the signal the kernel sends this process when its parent dies
_PR_SET_PDEATHSIG = 1
#: ``=1``: tools outlive a killed dbguard, as where PR_SET_PDEATHSIG does not exist;
#: tests use it to prove the restore transaction alone cannot commit without its lease
ORPHANS_ENV = "DBGUARD_ORPHAN_TOOLS"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once, here: a forked child must not load libraries before it execs.
_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a server tool die (SIGKILL) when this process dies.

    A killed dbguard must not leave a pg_restore, psql or mariadb behind that keeps
    writing (or holding locks) with nobody to check or record what it did. Linux only
    (PR_SET_PDEATHSIG); elsewhere None, and the restore's own transaction still cannot
    commit without its lease (see :mod:`dbguard_plugin.operations.server_restore`).
    """
    prctl = _PRCTL
    if prctl is None or os.environ.get(ORPHANS_ENV) == "1":
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def find_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            f"{name} is not installed or not on PATH; server backups use the server's own "
            f"tools: install {package} (the client version must be at least the server's)"
        )
    return path


@dataclass(frozen=True)
class Digests:
    raw_size: int
    raw_sha256: str
    size: int
    sha256: str


#: Flush the file every this many bytes, in the background (see _Sink.write).
_FLUSH_BYTES = 32 << 20


class _Sink:
    """Writes a stream to a file descriptor, hashing what goes in and what is stored.

    The file is flushed to disk as it grows, by a background thread, so the final fsync
    finds little left to write: one fsync of the whole dump at the end cost as much as
    a fifth of the dump's own time, with the disk idle while the tool ran.
    """

    def __init__(self, fd: int, compression: str) -> None:
        self._fd = fd
        self._unflushed = 0
        self._flusher: threading.Thread | None = None
        self._out = os.fdopen(fd, "wb", buffering=0, closefd=False)
        self._raw = hashlib.sha256()
        self._stored = hashlib.sha256()
        self.raw_size = 0
        self.size = 0
        self._writer: Any = None
        if compression in ("gzip", "zstd"):
            self._writer = compressing(self, compression)

    def write(self, data: bytes) -> int:  # called by the compressors, or directly
        self._stored.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            view = view[self._out.write(view) or 0:]
        self._unflushed += len(data)
        if self._unflushed >= _FLUSH_BYTES and (
                self._flusher is None or not self._flusher.is_alive()):
            self._unflushed = 0
            self._flusher = threading.Thread(target=_datasync, args=(self._fd,),
                                             name="dbguard-flush", daemon=True)
            self._flusher.start()
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here (the compressors call it); finish() makes it durable."""

    def feed(self, data: bytes) -> None:
        self._raw.update(data)
        self.raw_size += len(data)
        if self._writer is None:
            self.write(data)
        else:
            self._writer.write(data)

    def finish(self) -> Digests:
        if self._writer is not None:
            self._writer.close()
        if self._flusher is not None:
            self._flusher.join()
        self._out.close()
        raw = self._raw.hexdigest()
        stored = self._stored.hexdigest() if self._writer is not None else raw
        return Digests(self.raw_size, raw, self.size, stored)


def stream_dump(
    argv: Sequence[str], env: dict[str, str], fd: int, params: ServerParams, *,
    compression: str = "none", observer: Callable[[bytes], None] | None = None,
    progress: Progress | None = None, started: Callable[[int], None] | None = None,
) -> Digests:
    """Run a dump tool and store its stdout in *fd*; raise BackupError when it fails."""
    sink = _Sink(fd, compression)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, env=env, preexec_fn=die_with_parent())
        try:
            if started is not None:
                started(proc.pid)
            assert proc.stdout is not None
            _widen(proc.stdout.fileno())
            reader = proc.stdout  # buffered: whole chunks, not whatever the pipe holds
            while chunk := reader.read(CHUNK):
                sink.feed(chunk)
                if observer is not None:
                    observer(chunk)
                if progress is not None:
                    progress(sink.raw_size, 0)
            code = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        digests = sink.finish()
        if code != 0:
            raise BackupError(_failure(argv[0], code, err, params))
    return digests


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a tool this process gave up on, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _datasync(fd: int) -> None:
    with contextlib.suppress(OSError):  # the caller's final fsync reports any error
        datasync(fd)


def _widen(fd: int) -> None:
    """Let the tool run ahead by a whole chunk while the last one is hashed and written
    (a 64 KiB pipe made the dump wait on this process; Linux only, best effort)."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def run_tool(
    argv: Sequence[str], env: dict[str, str], params: ServerParams, *,
    stdin: IO[bytes] | None = None, feed: Path | None = None, compression: str = "none",
) -> str:
    """Run a tool to completion (optionally feeding it a stored file, decompressed);
    return its stdout as text, raise ToolError with the scrubbed stderr on failure."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if feed is not None else
            (stdin if stdin is not None else subprocess.DEVNULL),
            stdout=out, stderr=err, env=env, preexec_fn=die_with_parent(),
        )
        try:
            if feed is not None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError), proc.stdin:
                    for chunk in read_plain(feed, compression):
                        proc.stdin.write(chunk)
            code = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        if code != 0:
            raise ToolError(_failure(argv[0], code, err, params))
        out.seek(0)
        return out.read().decode("utf-8", "replace")


def read_plain(path: Path, compression: str) -> Any:
    """Yield the plain content of a stored dump, chunk by chunk."""
    with open(path, "rb") as src:
        reader = decompressing(src, compression)
        while chunk := reader.read(CHUNK):
            yield chunk


def _failure(tool: str, code: int, err: IO[bytes], params: ServerParams) -> str:
    err.seek(0)
    text = scrub(err.read()[-4000:].decode("utf-8", "replace"), params)
    lines = [line for line in text.splitlines() if line.strip()][-5:]
    return f"{os.path.basename(tool)} exited with status {code}: " + (
        " / ".join(lines) or "no message")
