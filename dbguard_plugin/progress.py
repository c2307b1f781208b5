"""Progress for long work: a bar on a terminal once the work passes a second, else nothing."""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import Any

import click

#: Seconds before a bar appears; ``DBGUARD_PROGRESS_DELAY`` changes it (tests set 0).
DELAY_ENV = "DBGUARD_PROGRESS_DELAY"


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, "1")))
    except ValueError:
        return 1.0


class LazyBar:
    """A click progress bar that appears only on a terminal and only after a second.

    Used as the ``progress(done, total)`` callback of long operations; silent when
    stderr is not a terminal or when JSON output was asked for. The bar appears when the
    second is up even if no step reported since (a long compression or check after a
    quick copy), and a step of a new phase (another *total*) starts a new bar.
    """

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._lock = threading.Lock()
        self._due = False
        self._timer: threading.Timer | None = None
        self._bar: Any = None
        self._done = 0
        self._shown = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._done, phase_changed = done, total != self._total
            self._total = total
            if self._bar is not None and phase_changed:
                self._close_bar()
            if self._due:
                self._show()

    def _appear(self) -> None:
        with self._lock:
            self._due = True
            self._show()

    def _show(self) -> None:
        """Open the bar if there is a total, and bring it to the last step (lock held)."""
        if self._total <= 0:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=self._total, label=self.label,
                                          file=sys.stderr)
            self._bar.__enter__()
            self._shown = 0
        self._bar.update(self._done - self._shown)
        self._shown = self._done

    def _close_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.__exit__(None, None, None)

    def __enter__(self) -> LazyBar:
        if self.enabled:
            self._timer = threading.Timer(_delay(), self._appear)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._due = False
            self._close_bar()
