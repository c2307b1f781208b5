"""Shared fixtures: real SQLite paths in tmp_path, real child processes, the real CLI.

Child processes are plain Python scripts (their text is given inline by the test and
written to tmp_path) that import the installed ``dbguard_plugin``. A child announces that
it reached the state the test needs by printing a line (``READY``) on stdout; the parent
waits for that line with a bounded timeout and never sleeps to "give it time". Every
child still running at teardown is killed with SIGKILL and reaped.

Every test that runs the dbguard CLI does it through ``run_cli`` (cli_runs.py), in a
real process or in this one. No test module imports another test module or a conftest
(test_test_layout.py): what tests share is a fixture here, or, where a helper is used
inside assertions and other helpers, a support module that is not a test
(child_process.py, cli_runs.py, crash_cases.py, prune_cycles.py, sqlite_files.py,
sqlite_urls.py, faults.py, malformed.py, rst_blocks.py).
"""

from __future__ import annotations

import ast
import functools
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crash_cases
import prune_cycles
import pytest
from child_process import TIMEOUT, Child
from cli_runs import Cli

from dbguard_plugin import Guard
from dbguard_plugin.plugin.manager import pm
from dbguard_plugin.settings.config import Config

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
def run_cli(tmp_path: Path, child_env: Callable[..., dict[str, str]]) -> Cli:
    """The dbguard CLI, every way a test runs it (see :class:`cli_runs.Cli`): by default
    ``python -m dbguard_plugin ARGS`` in a separate process, as an operator would."""
    return Cli(child_env, tmp_path)


@pytest.fixture
def spawn(
    tmp_path: Path, child_env: Callable[..., dict[str, str]]
) -> Iterator[Callable[..., Child]]:
    """Start a child from inline script text; ``ready`` names the line to wait for first.

    ``spawn(SCRIPT, arg1, arg2, ready="READY", env=None)`` writes the dedented script to
    tmp_path (or *where*), runs it with this interpreter there (its command line passed
    through *wrap*, e.g. faults.without_dac), waits for the ready line (bounded) and
    returns a :class:`Child`. Every child is SIGKILLed and reaped at teardown.
    """
    children: list[Child] = []

    def start(
        source: str, *args: str, ready: str | None = "READY",
        env: dict[str, str] | None = None, where: Path | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> Child:
        n = len(children)
        directory = where or tmp_path
        script = directory / f"child_{n}.py"
        script.write_text(textwrap.dedent(source), encoding="utf-8")
        script.chmod(0o644)  # readable by a child that runs without DAC override
        stderr_path = directory / f"child_{n}.stderr"
        cmd = [sys.executable, str(script), *args]
        with open(stderr_path, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                cmd if wrap is None else wrap(cmd),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, env=child_env() if env is None else env, cwd=directory,
            )
        child = Child(proc, stderr_path, script)
        children.append(child)
        if ready is not None:
            child.expect(ready)
        return child

    yield start
    for child in children:
        child.close()


def _make_trades_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT, is_open INTEGER)")
    conn.executemany("INSERT INTO trades (pair, is_open) VALUES (?, 0)",
                     [(f"P{i}/USDT",) for i in range(rows)])
    conn.commit()
    conn.close()


@pytest.fixture
def make_trades_db() -> Callable[[Path, int], None]:
    """``make_trades_db(PATH, ROWS)``: a bot's SQLite database in WAL mode, table trades
    holding *ROWS* closed trades."""
    return _make_trades_db


@pytest.fixture
def crash_then_write(
    db_path: Path, db_url: str, state_dir: Path, make_guard: Callable[..., Guard],
    run_cli: Cli, child_env: Callable[..., dict[str, str]], spawn: Callable[..., Child],
) -> Callable[[str, str, str], dict[str, Any]]:
    """``crash_then_write(OPERATION, POINT, MODE)``: :func:`crash_cases.crash_then_write`
    on this test's database."""
    return functools.partial(
        crash_cases.crash_then_write, db_path=db_path, db_url=db_url, state_dir=state_dir,
        make_guard=make_guard, run_cli=run_cli, child_env=child_env, spawn=spawn)


@pytest.fixture
def move_crash_then_write(
    tmp_path: Path, db_path: Path, db_url: str, make_guard: Callable[..., Guard],
    run_cli: Cli, child_env: Callable[..., dict[str, str]], spawn: Callable[..., Child],
) -> Callable[[str], None]:
    """``move_crash_then_write(POINT)``: :func:`crash_cases.move_crash_then_write` on this
    test's database."""
    return functools.partial(
        crash_cases.move_crash_then_write, tmp_path=tmp_path, db_path=db_path,
        db_url=db_url, make_guard=make_guard, run_cli=run_cli, child_env=child_env,
        spawn=spawn)


@pytest.fixture
def prune_beside_cycles(
    tmp_path: Path, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., Guard], spawn: Callable[..., Child],
) -> Callable[[int], None]:
    """``prune_beside_cycles(CYCLES)``: :func:`prune_cycles.prune_beside_cycles` on this
    test's database."""
    return functools.partial(prune_cycles.prune_beside_cycles, tmp_path=tmp_path,
                             db_path=db_path, db_url=db_url, state_dir=state_dir,
                             make_guard=make_guard, spawn=spawn)


@pytest.fixture
def scenarios_of() -> Callable[[str], dict[str, str]]:
    """``scenarios_of("test_x.py")``: that test module's ``SCENARIOS`` (signal name -> the
    test that shows it), read from its source, since no test module imports another."""

    def read(module: str) -> dict[str, str]:
        tree = ast.parse((Path(__file__).parent / module).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(target, ast.Name) and target.id == "SCENARIOS"
                    for target in node.targets):
                assert isinstance(node.value, ast.Dict), f"{module}: SCENARIOS is not a dict"
                return {ast.literal_eval(key): ast.unparse(value) for key, value
                        in zip(node.value.keys, node.value.values, strict=True)
                        if key is not None}
        raise AssertionError(f"{module} has no SCENARIOS")

    return read


@pytest.fixture
def backed_up_journal_db(db_path: Path, db_url: str) -> Callable[[list[str]], str]:
    """``backed_up_journal_db(PAIRS)``: the test's database in rollback-journal (DELETE)
    mode, table trades (id, pair) holding PAIRS; returns the id of a backup of it."""

    def make(pairs: list[str]) -> str:
        conn = sqlite3.connect(db_path)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT)")
        conn.executemany("INSERT INTO trades (pair) VALUES (?)", [(p,) for p in pairs])
        conn.commit()
        conn.close()
        guard = Guard(db_url=db_url)
        try:
            return guard.backup().id
        finally:
            guard.close()

    return make


@pytest.fixture
def received() -> Iterator[Callable[..., list[Any]]]:
    """``received(signal, probe=None, keywords_only=False)`` connects a recording receiver
    (strongly, taking ``**extra``) and returns its log: (sender, keyword arguments) for
    every send, or only the keyword arguments. *probe* (a callable) runs inside the
    receiver and its result is recorded under ``"_probe"``. Disconnected at teardown."""
    connected: list[tuple[Any, Callable[..., None]]] = []

    def connect(signal: Any, probe: Callable[[], Any] | None = None,
                keywords_only: bool = False) -> list[Any]:
        log: list[Any] = []

        def receiver(sender: object, **extra: Any) -> None:
            if probe is not None:
                extra = {**extra, "_probe": probe()}
            log.append(extra if keywords_only else (sender, extra))

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return log

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


def _read_terminal(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 1.0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def read_terminal() -> Callable[[int], str]:
    """``read_terminal(MASTER)``: what was written to a pty's other side, read from its
    master until that side is closed (or a second passes without output)."""
    return _read_terminal


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory outside pytest's tmp_path, readable by any process: a mount point for a
    small filesystem, or the home of a child that runs without DAC override."""
    path = Path(tempfile.mkdtemp(prefix="dbguard-faults-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["umount", "-l", str(path / "small")], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


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


#: A bot in a session with a refresh hook; each "TICK" line calls guard.tick() and prints
#: TICKED; the hook prints REFRESHED with what the bot reads then. argv: config, db path
TICKING_BOT = """
    import sqlite3
    import sys
    from dbguard_plugin import Guard, hookimpl
    from dbguard_plugin.plugin.manager import pm

    class Host:
        @hookimpl
        def dbguard_refresh(self, guard, operation):
            conn = sqlite3.connect(sys.argv[2])
            count = conn.execute("SELECT count(*) FROM t").fetchone()[0]
            conn.close()
            print("REFRESHED", operation.value, count, flush=True)

    pm.register(Host())
    guard = Guard.from_config(sys.argv[1])
    guard.start_session("S-tick")
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() != "TICK":
            break
        guard.tick()
        print("TICKED", flush=True)
    guard.end_session()
    guard.close()
"""


@pytest.fixture
def scripts() -> dict[str, str]:
    return {
        "bot_with_orders": BOT_WITH_ORDERS,
        "operation_holder": OPERATION_HOLDER,
        "bot_with_session": BOT_WITH_SESSION,
        "ticking_bot": TICKING_BOT,
    }
