"""File locks: the one place dbguard takes one (the lease, the catalog, the profiles file).

On POSIX a lock is ``fcntl.flock`` on an open file, which is what portalocker calls there
too; importing portalocker costs every ``dbguard`` command about 30 ms (it looks its own
version up through ``importlib.metadata`` at import), more than ``dbguard check`` spends
on everything else it does. Windows has no ``flock``: portalocker's ``LockFileEx``
wrapper takes the lock there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.files import open_private

if sys.platform == "win32":
    import portalocker
else:
    import fcntl

#: How often a waiting writer tries the lock again.
_RETRY = 0.02


def try_lock(fh: IO[bytes], *, shared: bool = False) -> bool:
    """Take the lock on open file *fh* without waiting; False when another holds it."""
    if sys.platform == "win32":
        flags = portalocker.LockFlags.SHARED if shared else portalocker.LockFlags.EXCLUSIVE
        try:
            portalocker.lock(fh, flags | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.LockException:
            return False
        return True
    try:
        fcntl.flock(fh.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fh: IO[bytes]) -> None:
    """Release the lock on *fh* (closing the file releases it too)."""
    if sys.platform == "win32":
        portalocker.unlock(fh)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(path: Path, timeout: float, busy: str) -> Iterator[None]:
    """Hold lock file *path* exclusive, waiting up to *timeout* seconds for another
    holder; after that, fail with *busy* (which says what is held and what to do)."""
    with os.fdopen(open_private(path), "r+b") as fh:
        deadline = time.monotonic() + timeout
        while not try_lock(fh):
            if time.monotonic() >= deadline:
                raise DbGuardError(busy)
            time.sleep(_RETRY)
        yield
