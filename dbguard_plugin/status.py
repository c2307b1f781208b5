"""Status files beside the lease: who holds it and why.

A status file only explains a held lease; it never decides anything. The lock decides, so
a bot killed with SIGKILL leaves at most a status file whose pid is dead, which readers
skip and the next lease holder removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbguard_plugin.files import read_small, write_json_atomic

HOSTNAME = socket.gethostname()
_MIN_INTERVAL = 0.02


@dataclass(frozen=True)
class HolderStatus:
    """What one process published about its hold on the lease."""

    path: Path
    role: str  # "bot" or "operation"
    pid: int
    host: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def orders(self) -> list[dict[str, Any]]:
        return list(self.data.get("orders_in_flight") or [])

    @property
    def session(self) -> dict[str, Any] | None:
        return self.data.get("session") or None

    @property
    def operation(self) -> str | None:
        return self.data.get("operation")

    @property
    def local(self) -> bool:
        return self.host == HOSTNAME

    @property
    def alive(self) -> bool:
        return not self.local or pid_alive(self.pid)

    def where(self) -> str:
        return f"pid {self.pid}" + ("" if self.local else f" on {self.host}")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_path(holders_dir: Path, role: str, pid: int | None = None) -> Path:
    return holders_dir / f"{role}-{HOSTNAME}-{os.getpid() if pid is None else pid}.json"


def read_holders(holders_dir: Path) -> list[HolderStatus]:
    """Every readable status file, newest information first; dead local pids skipped."""
    found: list[HolderStatus] = []
    try:
        names = sorted(os.listdir(holders_dir))
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = holders_dir / name
        try:
            data = json.loads(read_small(path))
            status = HolderStatus(
                path, str(data["role"]), int(data["pid"]), str(data["host"]), data
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written by an old version or a foreign file: it explains nothing
        if status.alive:
            found.append(status)
    return found


def remove_stale(holders_dir: Path) -> None:
    """Remove status files of local processes that died (call while holding the lease)."""
    try:
        names = os.listdir(holders_dir)
    except FileNotFoundError:
        return
    for name in names:
        parts = name.rsplit(".", 1)[0].split("-")
        if len(parts) < 3 or not name.endswith(".json"):
            continue
        host, pid = "-".join(parts[1:-1]), parts[-1]
        if host == HOSTNAME and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(holders_dir / name)


class StatusPublisher:
    """Keeps one process's status file current without writing on the caller's thread.

    ``publish_now`` writes synchronously (used when the lease is taken or given back);
    ``publish_soon`` only wakes a daemon thread, so an order event between those two
    moments never waits on the disk.
    """

    def __init__(self, path: Path, render: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._render = render
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def publish_now(self) -> None:
        with self._lock:
            self._wake.clear()
            self._write()

    def publish_soon(self) -> None:
        if self._wake.is_set():
            return  # a write is already due; it will carry this change too
        if self._thread is None:
            self._start()
        self._wake.set()

    def withdraw(self) -> None:
        with self._lock:
            self._wake.clear()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _write(self) -> None:
        try:
            write_json_atomic(self.path, self._render())
        except OSError:
            self._discard_scratch()
            raise

    def _discard_scratch(self) -> None:
        """Remove what a failed write left: on a full disk a bot retries every loop, and
        each try would leave another scratch file (write_atomic's ``.tmp-`` name)."""
        prefix = f".tmp-{self.path.name}.{os.getpid()}-"
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path.parent):
                if name.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path.parent / name)

    def _still_published(self) -> bool:
        """Whether a change is still to be written: not after a withdraw (the server
        publisher overrides this: it has no file)."""
        return os.path.exists(self.path)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dbguard-status", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            with self._lock:
                if not self._wake.is_set():
                    continue  # a synchronous publish or withdraw got there first
                self._wake.clear()
                if self._still_published():
                    with contextlib.suppress(OSError):
                        self._write()
            # Coalesce bursts: one write per interval at most, so a busy host's thread
            # is not competing with a writer for the GIL on every event.
            time.sleep(_MIN_INTERVAL)
