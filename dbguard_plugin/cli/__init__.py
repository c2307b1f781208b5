"""The ``dbguard`` command: the group and its commands, one module per command group.

The shared options, output, errors and exit codes are in :mod:`dbguard_plugin.cli.options`.
"""

from __future__ import annotations

import logging

import click

from dbguard_plugin.cli.backups import backup, backups, prune, verify
from dbguard_plugin.cli.demo import demo
from dbguard_plugin.cli.move import move
from dbguard_plugin.cli.options import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNDECIDED,
    EXIT_USAGE,
    EXIT_VERIFY,
    EXIT_VETOED,
    common,
)
from dbguard_plugin.cli.profile import profile
from dbguard_plugin.cli.recover import recover
from dbguard_plugin.cli.restore import restore, rollback
from dbguard_plugin.cli.status import check, doctor, status
from dbguard_plugin.version import __version__

__all__ = [
    "EXIT_FAILURE", "EXIT_OK", "EXIT_UNDECIDED", "EXIT_USAGE", "EXIT_VERIFY", "EXIT_VETOED",
    "cli", "main",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbguard")
@common
def cli() -> None:
    """Guard a trading bot's database: no risky operation while orders are in flight.

    Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 vetoed,
    4 verification failed, 5 undecided (dbguard recover).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for _command in (status, check, backup, backups, verify, prune, doctor, restore, rollback,
                 recover, move, demo, profile):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="dbguard")
