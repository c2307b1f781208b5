"""Progress for long work: a bar on a terminal once the work passes a second, else nothing."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

import click

_DELAY = 1.0


class LazyBar:
    """A click progress bar that appears only on a terminal and only after a second.

    Used as the ``progress(done, total)`` callback of long operations; silent when
    stderr is not a terminal or when JSON output was asked for.
    """

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._start = time.monotonic()
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._start < _DELAY or total <= 0:
                return
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
