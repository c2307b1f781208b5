"""The database a command's options name (--db, --config, --profile, the active
profile), opened as a Guard after an interrupted operation is finished or undone."""

from __future__ import annotations

import click

from dbguard_plugin.cli.options import OPENED, config_path, db_url, options
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.operations import recovery
from dbguard_plugin.settings.profile_file import ProfileFile


def open_guard(recover: bool = True) -> Guard:
    """The Guard for --db / --config; first finishes or undoes an interrupted operation."""
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
        said = recovery.recover(guard)
        for sentence in said:
            click.echo(f"dbguard: recovered: {sentence}", err=True)
        if said:  # a finished move may have changed the configuration itself
            guard = Guard.from_config(path, db_url=db, profile=profile)
        _report_undecided(guard)
    return guard


def _report_undecided(guard: Guard) -> None:
    """Tell the operator, on stderr and before the command's own output, about an
    interrupted operation that awaits their decision; the command itself goes on."""
    pending = recovery.undecided(guard)
    for line in pending.lines() if pending is not None else ():
        click.echo(f"dbguard: {line}", err=True)


def _profile_database(name: str | None) -> bool:
    """True when the selected (or active) profile names its own database."""
    store = ProfileFile.locate(None)
    profile = store.get(name) if name is not None else store.active()
    return profile is not None and profile.db_url is not None
