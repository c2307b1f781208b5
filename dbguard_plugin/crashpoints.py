"""Named points where a test can have this process killed with SIGKILL.

``DBGUARD_CRASH_AT=backup:renamed`` makes the process kill itself, for real, the first
time it reaches that point; the crash tests use it to prove that every step of every
operation leaves the database and the catalog recoverable. Unset (always, in
production) it costs one dictionary lookup per step of an operation, and nothing on
the order-event path.
"""

from __future__ import annotations

import os
import signal

ENV = "DBGUARD_CRASH_AT"


def reach(point: str) -> None:
    """Die here, by SIGKILL, if the environment names this point."""
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


FAIL_RENAMES_ENV = "DBGUARD_FAIL_RENAMES"
_failed_renames = 0


def rename_fault() -> None:
    """Raise PermissionError for the first N renames of this process when
    ``DBGUARD_FAIL_RENAMES=N``: what Windows does while another process has the file
    open. Tests use it to prove the bounded retry; unset, it costs a dictionary lookup."""
    global _failed_renames
    wanted = os.environ.get(FAIL_RENAMES_ENV)
    if wanted and _failed_renames < int(wanted):
        _failed_renames += 1
        raise PermissionError(13, "injected: the file is in use by another process")
