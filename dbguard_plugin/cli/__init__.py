"""The ``dbguard`` command: the group and its commands, one module per command group.

A command's module is imported only when that command runs, so ``dbguard status`` does
not pay for ``demo``, ``profile`` or ``restore``, nor ``dbguard --help`` for any of
them: click's documented lazy-loading pattern. The shared options, output, errors and
exit codes are in :mod:`dbguard_plugin.cli.options`.
"""

from __future__ import annotations

import importlib
import logging

import click

from dbguard_plugin.cli.options import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNDECIDED,
    EXIT_USAGE,
    EXIT_VERIFY,
    EXIT_VETOED,
    common,
)
from dbguard_plugin.version import __version__

__all__ = [
    "COMMANDS", "EXIT_FAILURE", "EXIT_OK", "EXIT_UNDECIDED", "EXIT_USAGE", "EXIT_VERIFY",
    "EXIT_VETOED", "cli", "main",
]

#: Every command: the module (in this package) that defines it, and the first line of its
#: help, which ``dbguard --help`` lists without importing the module
#: (tests/test_docs.py checks each against the command's own docstring).
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("status", "Show the lease, who holds it and why, and this configuration."),
    "check": ("status",
              "Would OPERATION be allowed now? Exit 3 with every reason when vetoed."),
    "backup": ("backups", "Take a verified hot backup of the live database now."),
    "backups": ("backups", "List the backups in the catalog, oldest first."),
    "verify": ("backups", "Recompute sha256 and run integrity_check on ID (or --all)."),
    "prune": ("backups", "Delete backups the retention policy (keep_last, keep_daily, "
              "keep_weekly, ...) drops."),
    "convert": ("backups", "Move the catalog's full-copy SQLite backups into its "
                "deduplicated repository."),
    "doctor": ("status", "Check journal mode, busy timeout, free space, permissions and "
               "backup age."),
    "restore": ("restore", "Restore backup ID into the live database: verified, atomic, "
                "with a safety backup."),
    "rollback": ("restore", "Undo the last restore, rollback or recovery from its safety "
                 "backup."),
    "recover": ("recover", "Finish or undo an interrupted operation, or show why recovery "
                "could not decide."),
    "move": ("move", "Move the SQLite database to NEW_PATH (a file or a directory) and "
             "switch the config."),
    "demo": ("demo", "Run a paper-trading bot and an operator against a throw-away SQLite "
             "file."),
    "profile": ("profile", "Environment profiles: development, testing, production and "
                "your own."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            module = importlib.import_module(f"dbguard_plugin.cli.{COMMANDS[cmd_name][0]}")
            command = getattr(module, cmd_name)
            assert isinstance(command, click.Command), cmd_name
            self.add_command(command, cmd_name)
        return self.commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, from COMMANDS: ``--help`` imports no command module."""
        names = self.list_commands(ctx)
        width = formatter.width - 6 - max(map(len, names))
        with formatter.section("Commands"):
            formatter.write_dl([(name, click.Command(name, help=COMMANDS[name][1])
                                 .get_short_help_str(width)) for name in names])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbguard")
@common
def cli() -> None:
    """Guard a trading bot's database: no risky operation while orders are in flight.

    Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 vetoed,
    4 verification failed, 5 undecided (dbguard recover).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="dbguard")
