"""The database a command's options name (--db, --config, --profile, the active
profile), opened as a Guard after an interrupted operation is finished or undone.

The command modules import their operations where a command runs, not at the top: the
guard's modules (the catalog, the lease, the plugin manager with pluggy, the engines)
cost about 0.1 s that ``dbguard --help`` and shell completion, which import every
command module, do not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dbguard_plugin.cli.options import OPENED, config_path, db_url, options
from dbguard_plugin.errors import ConfigError

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard


def open_guard(recover: bool = True) -> Guard:
    """The Guard for --db / --config; first finishes or undoes an interrupted operation."""
    # why here: the guard's modules are costly (see the module docstring)
    from dbguard_plugin.catalog import journal
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.operations import recovery

    profile, path, db = options().profile, config_path(), db_url()
    if path is None and db is None and not _profile_database(profile):
        raise ConfigError(
            "no database given: use --db URL (e.g. --db sqlite:////path/tradesv3.sqlite) "
            "or --config PATH to the bot's config file"
        )
    guard = Guard.from_config(path, db_url=db, profile=profile)
    # This invocation's database (redacted), for errors that cannot name it themselves.
    click.get_current_context().meta[OPENED] = guard.location.redacted
    if recover:
        try:
            said = recovery.recover(guard)
            pending = recovery.undecided(guard)
        except journal.UnreadableJournal as exc:
            # As an undecided one: said first, and the command goes on (a replacement
            # is refused where it would write the journal; prune keeps every backup).
            click.echo(f"dbguard: {exc}", err=True)
            return guard
        for sentence in said:
            click.echo(f"dbguard: recovered: {sentence}", err=True)
        if said:  # a finished move may have changed the configuration itself
            guard = Guard.from_config(path, db_url=db, profile=profile)
        # An interrupted operation that awaits the operator's decision: told on stderr
        # before the command's own output; the command itself goes on.
        for line in pending.lines() if pending is not None else ():
            click.echo(f"dbguard: {line}", err=True)
    return guard


def _profile_database(name: str | None) -> bool:
    """True when the selected (or active) profile names its own database."""
    # why here: the profiles file's modules are costly; see the docstring
    from dbguard_plugin.settings.profile_file import ProfileFile

    store = ProfileFile.locate(None)
    profile = store.get(name) if name is not None else store.active()
    return profile is not None and profile.db_url is not None
