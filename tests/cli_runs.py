"""How a test runs the dbguard CLI: the runner behind the ``run_cli`` fixture and the
result it returns.

A support module, not a conftest: test modules may import these names for their type
hints (pytest imports every directory's conftest.py as a module named "conftest").
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from child_process import TIMEOUT
from click.testing import CliRunner

from dbguard_plugin.cli import cli


@dataclass(frozen=True)
class CliResult:
    """One command's exit code and output, the same whether it ran in a process or here.

    ``returncode`` is subprocess's name for the exit code and ``exit_code`` click's, so a
    test reads the one it was written with.
    """

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    #: Everything the command wrote: interleaved when it ran here, stdout then stderr
    #: from a process.
    output: str
    #: What the command raised when it ran here with catch_exceptions=True.
    exception: BaseException | None = None

    @property
    def exit_code(self) -> int:
        return self.returncode

    @property
    def json(self) -> Any:
        """stdout parsed, for a command given ``--json``."""
        assert "--json" in self.args, f"{self.args} was not given --json"
        return json.loads(self.stdout)


class Cli:
    """``run_cli(ARGS)``: ``python -m dbguard_plugin ARGS`` in a separate process, as an
    operator would run it; ``in_process=True`` runs the same CLI in this process (fast,
    for a refusal that happens before anything is opened); ``start`` leaves the process
    running for a test that watches it, kills it or reads its terminal."""

    def __init__(self, environment: Callable[..., dict[str, str]], cwd: Path) -> None:
        self._environment = environment
        self._cwd = cwd

    def argv(self, *args: str, fsize: int | None = None,
             wrap: Callable[[list[str]], list[str]] | None = None) -> list[str]:
        """The command line; *fsize* limits the size of a file the process may write
        (RLIMIT_FSIZE, SIGXFSZ ignored: a write over it fails with EFBIG); *wrap* prefixes
        it (e.g. faults.without_dac)."""
        if fsize is None:
            cmd = [sys.executable, "-m", "dbguard_plugin", *args]
        else:
            code = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
                    f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); "
                    "import sys; from dbguard_plugin.cli import main; sys.exit(main())")
            cmd = [sys.executable, "-c", code, *args]
        return cmd if wrap is None else wrap(cmd)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        in_process: bool = False, catch_exceptions: bool = False,
        stderr: int | None = None, timeout: float = TIMEOUT, fsize: int | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> CliResult:
        """Run the command to its end. *stderr* (a file descriptor, e.g. a pty) receives
        the process's stderr instead of the result."""
        if in_process:
            return self._here(args, env, catch_exceptions)
        done = subprocess.run(
            self.argv(*args, fsize=fsize, wrap=wrap),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr is None else stderr,
            text=True, timeout=timeout, check=False,
            env=self._environment() if env is None else env, cwd=cwd or self._cwd,
            stdin=subprocess.DEVNULL,
        )
        err = done.stderr or ""
        return CliResult(tuple(args), done.returncode, done.stdout, err, done.stdout + err)

    def start(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE,
              ) -> subprocess.Popen[str]:
        """Start the command and return its process; the test waits for it or kills it."""
        return subprocess.Popen(
            self.argv(*args), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            text=True, env=self._environment() if env is None else env,
            cwd=cwd or self._cwd,
        )

    def _here(self, args: Sequence[str], env: dict[str, str] | None,
              catch_exceptions: bool) -> CliResult:
        result = CliRunner().invoke(cli, list(args), env=self._environment() if env is None
                                    else env, catch_exceptions=catch_exceptions)
        return CliResult(tuple(args), result.exit_code, result.stdout, result.stderr,
                         result.output, result.exception)
