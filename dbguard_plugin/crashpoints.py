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
