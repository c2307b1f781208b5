"""What every ``dbguard`` command shares: its options, its output (text or --json), its
confirmation, and how an error becomes a message and an exit code.

Exit codes (docs/cli.rst, "Exit codes"): 0 ok, 1 failure, 2 usage or configuration
error, 3 vetoed, 4 verification failed, 5 undecided (``dbguard recover``: an interrupted
operation awaits the operator's decision). An error's code is its class's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError, VetoedError
from dbguard_plugin.location import redact

EXIT_OK = 0
EXIT_FAILURE = DbGuardError.exit_code
EXIT_USAGE = ConfigError.exit_code
EXIT_VETOED = VetoedError.exit_code
EXIT_VERIFY = VerificationError.exit_code
#: ``dbguard recover``: an interrupted operation awaits the operator's decision.
EXIT_UNDECIDED = 5

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.meta`` key: this invocation's database (redacted), for errors that cannot name it.
OPENED = "dbguard.database"


class Options:
    """Options that every command accepts, before or after the command name."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.db: str | None = None
        self.profile: str | None = None
        self.json = False


def _set(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(Options), name, value)
        return value

    return callback


def _verbose(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    if value:
        logging.getLogger("dbguard_plugin").setLevel(logging.INFO)
    return value


def common(func: F) -> F:
    """Add --config, --db, --profile, --json and -v to a command."""
    func = click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose,
        help="Log what dbguard does to stderr.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, default=None, expose_value=False,
        callback=_set("json"), help="Print machine-readable JSON.",
    )(func)
    func = click.option(
        "--profile", metavar="NAME", expose_value=False, callback=_set("profile"),
        help="Environment profile to use instead of the active one (see 'dbguard profile').",
    )(func)
    func = click.option(
        "--db", metavar="URL", expose_value=False, callback=_set("db"),
        help="Database as a SQLAlchemy URL, e.g. sqlite:////path/tradesv3.sqlite "
        "(overrides the config; env DBGUARD_DB).",
    )(func)
    func = click.option(
        "--config", metavar="PATH", expose_value=False, callback=_set("config"),
        help="Bot config file: JSON with a \"dbguard\" object or TOML with [dbguard] "
        "(env DBGUARD_CONFIG).",
    )(func)
    return func


def options() -> Options:
    """This invocation's common options."""
    return click.get_current_context().ensure_object(Options)


def config_path() -> str | None:
    """The bot config: --config, else DBGUARD_CONFIG."""
    return options().config or os.environ.get("DBGUARD_CONFIG")


def db_url() -> str | None:
    """The database: --db, else DBGUARD_DB."""
    return options().db or os.environ.get("DBGUARD_DB")


def handle_errors(func: F) -> F:
    """Turn dbguard's errors into a message on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            # Disk full, a directory that is a file, a permission: say which file, no trace.
            where = f"{exc.filename}: " if exc.filename else ""
            fail(DbGuardError(f"{where}{exc.strerror or exc}"))
        except DbGuardError as exc:
            fail(exc)
        except sqlite3.DatabaseError as exc:
            # A database SQLite cannot read (damaged beyond quick_check): name it and say
            # what to do, never a traceback.
            ctx = click.get_current_context(silent=True)
            opened = ctx.meta.get(OPENED) if ctx is not None else None
            db = opened or options().db or config_path() or "database"
            fail(DbGuardError(
                f"{db}: SQLite cannot read it ({exc}); see the runbook, 'Corrupt database': "
                "stop the bot, move the damaged file aside together with its -wal, -shm "
                "and -journal, then 'dbguard restore ID --yes'"
            ))

    return wrapper  # type: ignore[return-value]


def fail(exc: DbGuardError) -> NoReturn:
    """Report *exc* (as JSON with --json) and exit with its code."""
    message = redact(str(exc))
    if options().json:
        verdict = getattr(exc, "verdict", None)
        body: dict[str, Any] = {"error": message, "exit_code": exc.exit_code}
        if verdict is not None:
            body["verdict"] = verdict.as_dict()
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"dbguard: {message}", err=True)
    sys.exit(exc.exit_code)


#: ``--yes``/``-y``, the same on every command that replaces or deletes something.
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def confirm(question: str, yes: bool) -> None:
    """Ask before a replacement; --yes answers for scripts. Exit 1 on no, 2 without a tty."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} needs confirmation: pass --yes to go ahead without "
                          "being asked (no terminal to ask on)")
    if not click.confirm(question, default=False, err=True):
        raise DbGuardError("aborted; nothing was changed")


def emit(data: Any, human: str) -> None:
    """Print *data* as JSON with --json, else *human*."""
    if options().json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(human)


def progress_shown() -> bool:
    """Whether a progress bar may appear: never in --json output."""
    return not options().json


def size(n: float) -> str:
    """*n* bytes for a person: 512 B, 1.5 KiB, 3.2 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)
