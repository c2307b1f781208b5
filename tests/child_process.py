"""A child Python process driven through its stdin and watched through its stdout.

A support module, not a conftest: the ``spawn`` fixture (conftest.py) starts these, and a
test module may import :class:`Child` for its type hints.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

#: Bound for every wait on a child or a CLI process. Generous: a slow CI machine must not
#: fail a test, and a hung child must not hang the suite.
TIMEOUT = 60.0


class Child:
    """A child Python process driven through its stdin and watched through its stdout."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path, script: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.script = script
        self._stderr_path = stderr_path
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def stderr(self) -> str:
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def expect(self, token: str = "READY", timeout: float = TIMEOUT) -> str:
        """Wait for a stdout line starting with *token*; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(f"child {self.pid} did not print {token!r} within {timeout} s;"
                            f"\nstdout so far: {self.output}\nstderr:\n{self.stderr}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=TIMEOUT)
                pytest.fail(f"child {self.pid} exited with {code} before printing {token!r};"
                            f"\nstdout: {self.output}\nstderr:\n{self.stderr}")
            self.output.append(line)
            if line.startswith(token):
                return line

    def send(self, line: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the child to exit by itself; fail (and kill it) after *timeout*."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"child {self.pid} did not exit within {timeout} s;\n"
                        f"stderr:\n{self.stderr}")

    def kill(self) -> int:
        """SIGKILL the child and reap it (waitpid), so the kernel dropped its locks."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        self.kill()
        self._reader.join(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
