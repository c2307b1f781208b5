"""The read-only commands on a SQLite database start without SQLAlchemy or a server
driver, and ``dbguard --help`` without the guard: what bench/cli_startup.py times.

Each command runs in a real process through a ``-c`` wrapper that writes, at exit, the
names of every module the process imported. Behaviour only: no timing is asserted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from cli_runs import Cli

#: SQLAlchemy and the server drivers: a SQLite command never needs them.
HEAVY = ("sqlalchemy", "psycopg", "psycopg2", "pymysql", "MySQLdb")

#: The dbguard command, run as ``python -c WRAPPER ARGS``; it writes the imported
#: modules' names to the file DBGUARD_TEST_MODULES names, as JSON, when it exits.
WRAPPER = """
import atexit, json, os, sys

def _write_modules():
    with open(os.environ["DBGUARD_TEST_MODULES"], "w", encoding="utf-8") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(_write_modules)
from dbguard_plugin.cli import main
main()
"""


@pytest.fixture
def idle_db(tmp_path: Path) -> str:
    """An idle bot database (no bot, no session): its URL."""
    path = tmp_path / "tradesv3.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, is_open INTEGER)")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
    return f"sqlite:///{path}"


@pytest.fixture
def imported(run_cli: Cli, child_env: Callable[..., dict[str, str]],
             tmp_path: Path) -> Callable[..., tuple[int, str, list[str]]]:
    """Run the CLI with ARGS; its exit code, stdout and the modules it imported."""

    def run(*args: str) -> tuple[int, str, list[str]]:
        listing = tmp_path / "modules.json"
        listing.unlink(missing_ok=True)
        result = run_cli(*args, env=child_env(DBGUARD_TEST_MODULES=str(listing)),
                         wrap=lambda cmd: [cmd[0], "-c", WRAPPER, *cmd[3:]])
        assert listing.exists(), result.stdout + result.stderr
        modules = json.loads(listing.read_text(encoding="utf-8"))
        return result.returncode, result.stdout, modules

    return run


def heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in HEAVY]


def test_status_of_a_sqlite_database_imports_no_sqlalchemy(imported, idle_db) -> None:
    code, stdout, modules = imported("status", "--json", "--db", idle_db)
    assert code == 0, stdout
    assert json.loads(stdout)["lease"]["orders"] == "free"
    assert "dbguard_plugin.core.guard" in modules  # the wrapper saw the real command
    assert heavy(modules) == []


def test_check_restore_on_a_sqlite_database_imports_no_sqlalchemy(imported, idle_db) -> None:
    code, stdout, modules = imported("check", "restore", "--db", idle_db)
    assert code == 0, stdout
    assert "allowed" in stdout
    assert "dbguard_plugin.core.guard" in modules
    assert heavy(modules) == []


def test_check_restore_through_a_file_uri_imports_no_sqlalchemy(imported, idle_db) -> None:
    path = idle_db.removeprefix("sqlite:///")
    code, stdout, modules = imported("check", "restore", "--json", "--db",
                                     f"sqlite:///file:{path}?mode=rw&uri=true")
    assert code == 0, stdout
    assert json.loads(stdout)["allowed"] is True
    assert heavy(modules) == []


#: What ``status`` and ``check`` never need: the other commands, the backup machinery
#: (the SQLite engine's, the repository, retention, verification), the server engine's
#: URL parameters, recovery's deciding (no journal here), the TOML reader and writer (no
#: config or profiles file here), difflib (for a config error's hint) and portalocker,
#: whose import looks its own version up (dbguard takes its locks with flock on POSIX).
NOT_FOR_STATUS = ("dbguard_plugin.cli.demo", "dbguard_plugin.cli.profile",
                  "dbguard_plugin.cli.restore", "dbguard_plugin.engines.sqlite",
                  "dbguard_plugin.engines.backup", "dbguard_plugin.engines.verify",
                  "dbguard_plugin.engines.server", "dbguard_plugin.catalog.repository",
                  "dbguard_plugin.catalog.retention",
                  "dbguard_plugin.operations.settle", "dbguard_plugin.operations.move",
                  "dbguard_plugin.operations.restore", "portalocker", "tomllib", "tomli",
                  "tomli_w", "difflib")


@pytest.mark.parametrize("args", [["status", "--json"], ["check", "restore"]],
                         ids=["status", "check"])
def test_status_and_check_import_only_what_they_use(imported, idle_db, args) -> None:
    code, stdout, modules = imported(*args, "--db", idle_db)
    assert code == 0, stdout
    assert "dbguard_plugin.core.guard" in modules
    assert [m for m in modules if m.startswith(NOT_FOR_STATUS)] == []


def test_help_imports_neither_the_guard_nor_sqlalchemy(imported) -> None:
    code, stdout, modules = imported("--help")
    assert code == 0
    assert "restore" in stdout
    assert "dbguard_plugin.core.guard" not in modules
    assert not [m for m in modules if m.startswith("dbguard_plugin.operations")]
    # the listing comes from cli.COMMANDS: no command's module is imported
    assert not [m for m in modules if m.startswith("dbguard_plugin.cli.")
                and m != "dbguard_plugin.cli.options"]
    assert heavy(modules) == []
