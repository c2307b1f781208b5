"""Shared fixtures: real SQLite paths in tmp_path, real child processes, the real CLI.

Child processes are plain Python scripts (their text is given inline by the test and
written to tmp_path) that import the installed ``dbguard_plugin``. A child announces that
it reached the state the test needs by printing a line (``READY``) on stdout; the parent
waits for that line with a bounded timeout and never sleeps to "give it time". Every
child still running at teardown is killed with SIGKILL and reaped.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbguard_plugin import Guard
from dbguard_plugin.plugin.manager import pm
from dbguard_plugin.settings.config import Config

#: Bound for every wait on a child or a CLI process. Generous: a slow CI machine must not
#: fail a test, and a hung child must not hang the suite.
TIMEOUT = 60.0

#: Variables a developer's shell (or tox's passenv DBGUARD_*) could leak into a test.
_LEAKY = ("DBGUARD_DB", "DBGUARD_CONFIG", "DBGUARD_BLOCK_PLUGINS", "DBGUARD_LOAD_PLUGINS",
          "DBGUARD_PROFILES")


@pytest.fixture(autouse=True, scope="session")
def _isolated_process_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This pytest process loads no third-party plugin and keeps state under tmp."""
    with pytest.MonkeyPatch.context() as mp:
        for name in _LEAKY:
            mp.delenv(name, raising=False)
        mp.setenv("DBGUARD_LOAD_PLUGINS", "")
        mp.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        # A developer's own profiles file (with an active profile) must not steer tests.
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
        yield


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tradesv3.sqlite"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def state_dir(db_path: Path) -> Path:
    """dbguard's directory beside the database."""
    return db_path.with_name(db_path.name + ".dbguard")


@pytest.fixture
def child_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Environment for a child or CLI process; ``NAME=None`` removes a variable.

    By default no third-party plugin is loaded (``DBGUARD_LOAD_PLUGINS=""``), nothing is
    inherited from DBGUARD_* in the developer's shell, and the per-user state directory
    (used for server databases) is inside tmp_path.
    """

    def make(**overrides: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
        env["DBGUARD_LOAD_PLUGINS"] = ""
        env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
        env["PYTHONUNBUFFERED"] = "1"
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    return make


@pytest.fixture
def run_cli(
    tmp_path: Path, child_env: Callable[..., dict[str, str]]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m dbguard_plugin ARGS`` in a separate process, as an operator would."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dbguard_plugin", *args],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
            env=child_env() if env is None else env, cwd=cwd or tmp_path,
            stdin=subprocess.DEVNULL,
        )

    return run


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


@pytest.fixture
def spawn(
    tmp_path: Path, child_env: Callable[..., dict[str, str]]
) -> Iterator[Callable[..., Child]]:
    """Start a child from inline script text; ``ready`` names the line to wait for first.

    ``spawn(SCRIPT, arg1, arg2, ready="READY", env=None)`` writes the dedented script to
    tmp_path, runs it with this interpreter, waits for the ready line (bounded) and returns
    a :class:`Child`. Every child is SIGKILLed and reaped at teardown.
    """
    children: list[Child] = []

    def start(
        source: str, *args: str, ready: str | None = "READY",
        env: dict[str, str] | None = None,
    ) -> Child:
        n = len(children)
        script = tmp_path / f"child_{n}.py"
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        stderr_path = tmp_path / f"child_{n}.stderr"
        with open(stderr_path, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, env=child_env() if env is None else env, cwd=tmp_path,
            )
        child = Child(proc, stderr_path, script)
        children.append(child)
        if ready is not None:
            child.expect(ready)
        return child

    yield start
    for child in children:
        child.close()


def _thread_is_in(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


@pytest.fixture
def wait_until_waiting() -> Callable[[threading.Thread, str], None]:
    """Block until *thread* is inside *function* (e.g. the lease's retry loop), bounded.

    This is how a test knows a bounded wait really started before it releases what the
    thread waits for, without sleeping "long enough".
    """

    def wait(thread: threading.Thread, function: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not _thread_is_in(thread, function):
            assert thread.is_alive(), f"the thread returned without waiting in {function}()"
            assert time.monotonic() < deadline, f"the thread never waited in {function}()"
            time.sleep(0.002)

    return wait


@pytest.fixture
def make_guard(db_url: str) -> Iterator[Callable[..., Guard]]:
    """Guards in this process; every one is closed at teardown (its locks given back)."""
    guards: list[Guard] = []

    def make(config: Config | None = None, **kwargs: Any) -> Guard:
        if config is None and "db_url" not in kwargs:
            kwargs["db_url"] = db_url
        guard = Guard(config, **kwargs)
        guards.append(guard)
        return guard

    yield make
    for guard in guards:
        guard.close()


@pytest.fixture
def guard(make_guard: Callable[..., Guard]) -> Guard:
    return make_guard()


@pytest.fixture
def register_plugin() -> Iterator[Callable[[object], object]]:
    """Register plugin objects on the process-wide plugin manager; unregistered afterwards."""
    registered: list[object] = []

    def register(plugin: object) -> object:
        pm.register(plugin)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        if pm.is_registered(plugin):
            pm.unregister(plugin)


# -- child scripts shared by several test modules ------------------------------------------

#: A bot with a session and two orders in flight; prints READY, exits on any stdin line.
#: argv: db_url
BOT_WITH_ORDERS = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    guard.start_session("S-7")
    for oid, symbol, side in (("A-1001", "BTC/USDT", "buy"), ("B-2002", "ETH/USDT", "sell")):
        assert guard.admit_order(), "admit_order refused"
        guard.order_event(oid, "submitted", symbol=symbol, side=side)
    guard.publish_status_now()
    print("READY", flush=True)
    sys.stdin.readline()
    guard.close()
"""

#: An operator inside ``with guard.operation(OP)``; prints READY, leaves the block on the
#: first stdin line and prints RELEASED, exits on the second. argv: db_url, operation
OPERATION_HOLDER = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    with guard.operation(sys.argv[2]):
        print("READY", flush=True)
        sys.stdin.readline()
    print("RELEASED", flush=True)
    sys.stdin.readline()
    guard.close()
"""

#: A bot with a session but no order; prints READY, exits on any stdin line. argv: db_url
BOT_WITH_SESSION = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    guard.start_session("S-idle")
    print("READY", flush=True)
    sys.stdin.readline()
    guard.end_session()
    guard.close()
"""


@pytest.fixture
def scripts() -> dict[str, str]:
    return {
        "bot_with_orders": BOT_WITH_ORDERS,
        "operation_holder": OPERATION_HOLDER,
        "bot_with_session": BOT_WITH_SESSION,
    }
