"""``dbguard move``: move the SQLite database and switch the configuration to it."""

from __future__ import annotations

import click

from dbguard_plugin.cli.database import open_guard
from dbguard_plugin.cli.options import (
    common,
    config_path,
    confirm,
    emit,
    handle_errors,
    progress_shown,
    yes_option,
)
from dbguard_plugin.events import Operation
from dbguard_plugin.progress import LazyBar


@click.command()
@click.argument("new_path", metavar="NEW_PATH")
@click.option("--delete-old", is_flag=True,
              help="Delete the old file (and its -wal/-shm/-journal) after the copy verified.")
@click.option("--force", is_flag=True, help="Override an active session and plugin vetoes.")
@yes_option
@common
@handle_errors
def move(new_path: str, delete_old: bool, force: bool, yes: bool) -> None:
    """Move the SQLite database to NEW_PATH (a file or a directory) and switch the config."""
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.operations import move as engine

    guard = open_guard()
    guard.refuse_unguardable(Operation.MOVE)
    confirm(f"Move {guard.location.redacted} to {new_path}?", yes)
    with LazyBar("copying", enabled=progress_shown()) as bar:
        outcome = engine.move(guard, new_path, config_path=config_path(),
                              delete_old=delete_old, force=force, progress=bar)
    lines = [f"moved {outcome.old_path} -> {outcome.new_path} ({outcome.duration_s:.2f} s)",
             f"  config updated: {'yes' if outcome.config_updated else 'no'}; backups moved: "
             f"{'yes' if outcome.backups_moved else 'no'}; old file "
             f"{'deleted' if outcome.deleted_old else 'kept'}"]
    lines += [f"  ! {note}" for note in outcome.notes]
    emit(outcome.as_dict(), "\n".join(lines))
