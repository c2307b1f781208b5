"""The cross-process lease on a lock file beside the database.

A bot holds the ``orders`` lock shared from its first in-flight order until its last one
ends, and the ``session`` lock shared while a trading session runs. An operation takes the
``orders`` lock exclusive, so it cannot start while any bot has orders in flight, and no
bot can admit a new order while it runs (maintenance mode). The locks are ``flock`` locks
on their own files, never on the database, so SQLite's own POSIX locks are never touched,
and the kernel drops them when a holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dbguard_plugin.errors import UnsafePathError
from dbguard_plugin.files import open_private, private_dir
from dbguard_plugin.locks import try_lock, unlock
from dbguard_plugin.status import (
    HolderStatus,
    StatusPublisher,
    read_holders,
    remove_stale,
    status_path,
)

# Another process's probe holds the lock exclusive for a few microseconds; a bot that
# meets one retries this long before it calls the lease busy.
_PROBE_GRACE = 0.05


@dataclass(frozen=True)
class LeaseView:
    """What a probe saw: whether each lock is free, and who explains a held one."""

    orders_free: bool
    session_free: bool
    holders: list[HolderStatus] = field(default_factory=list)

    def others(self) -> list[HolderStatus]:
        return [h for h in self.holders if not (h.local and h.pid == os.getpid())]


def _real_dir(path: Path) -> bool:
    """False when *path* is missing; refuses a symlink or a non-directory."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(
            f"{path} is a symlink or not a directory; dbguard keeps its files only in a "
            "real directory: remove it or point state_dir at a real directory"
        )
    return True


class _Lock:
    """One lock file and the descriptor this process holds it through, if any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def take(self, *, shared: bool) -> bool:
        if self._file is not None:
            return True
        fh = os.fdopen(open_private(self.path), "r+b")
        if not try_lock(fh, shared=shared):
            fh.close()
            return False
        self._file = fh
        return True

    def drop(self) -> None:
        fh, self._file = self._file, None
        if fh is not None:
            with contextlib.suppress(Exception):
                unlock(fh)
            fh.close()

    def free(self) -> bool:
        """True when nobody holds the lock; takes it exclusive for an instant to know.

        Another process's probe holds it exclusive for an instant too, so a miss is
        retried for a short grace period before the lock counts as held.
        """
        probe = _Lock(self.path)
        deadline = time.monotonic() + _PROBE_GRACE
        while not probe.take(shared=False):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        probe.drop()
        return True


class Lease:
    """The lease of one database, kept in its dbguard directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.holders_dir = state_dir / "holders"
        self._orders = _Lock(state_dir / "lease")
        self._session = _Lock(state_dir / "session")
        self._operation = _Lock(state_dir / "lease")
        self._prepared = False

    def prepare(self) -> None:
        if not self._prepared:
            private_dir(self.state_dir)
            private_dir(self.holders_dir)
            self._prepared = True

    # -- bot side ----------------------------------------------------------------

    @property
    def holding_orders(self) -> bool:
        return self._orders.held

    def hold_orders(self, timeout: float = 0.0) -> bool:
        """Take the orders lock shared. False while an operation holds it exclusive."""
        self.prepare()
        deadline = time.monotonic() + max(timeout, _PROBE_GRACE)
        delay = 0.001
        while True:
            if self._orders.take(shared=True):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release_orders(self) -> None:
        self._orders.drop()

    def hold_session(self) -> bool:
        self.prepare()
        deadline = time.monotonic() + _PROBE_GRACE
        while not self._session.take(shared=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def release_session(self) -> None:
        self._session.drop()

    # -- operation side ----------------------------------------------------------

    @property
    def holding_exclusive(self) -> bool:
        return self._operation.held

    def take_exclusive(self, timeout: float = 0.0) -> bool:
        """Take the orders lock exclusive: no bot has, or can get, an order in flight."""
        self.prepare()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not self._operation.take(shared=False):
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        remove_stale(self.holders_dir)
        return True

    def release_exclusive(self) -> None:
        self._operation.drop()

    # -- anyone --------------------------------------------------------------------

    def probe(self) -> LeaseView:
        """Look at the lease without keeping anything: free or not, and who explains it."""
        if not _real_dir(self.state_dir) or not _real_dir(self.holders_dir):
            return LeaseView(True, True, [])
        # An exclusive holder knows the answer without probing its own lock.
        orders_free = not self._orders.held and not self._operation.held and \
            self._orders.free()
        session_free = not self._session.held and self._session.free()
        holders = read_holders(self.holders_dir)
        if orders_free and session_free:
            remove_stale(self.holders_dir)
        return LeaseView(orders_free, session_free, holders)

    def publisher(self, role: str, render: Callable[[], dict[str, Any]]) -> StatusPublisher:
        """Where this process explains its hold: a status file in ``holders/``."""
        return StatusPublisher(status_path(self.holders_dir, role), render)

    def close(self) -> None:
        self.release_orders()
        self.release_session()
        self.release_exclusive()

