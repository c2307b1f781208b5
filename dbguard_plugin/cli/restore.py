"""``dbguard restore`` and ``rollback``: replace the live database, asking first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from dbguard_plugin.cli.database import open_guard
from dbguard_plugin.cli.options import (
    common,
    config_path,
    confirm,
    db_url,
    emit,
    handle_errors,
    options,
    progress_shown,
    yes_option,
)
from dbguard_plugin.events import Operation
from dbguard_plugin.progress import LazyBar

if TYPE_CHECKING:
    from dbguard_plugin.operations.replacement import Outcome

_FORCE_HELP = ("Override an active session, plugin vetoes and dropping open positions "
               "(recorded in the audit log; never orders in flight).")


@click.command()
@click.argument("backup_id", metavar="ID")
@click.option("--preview", is_flag=True, help="Only show what the restore would change.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@yes_option
@click.option("--from-profile", metavar="NAME",
              help="Restore a backup taken in profile NAME, from its catalog (into a "
              "production profile a development or testing backup needs --force too).")
@common
@handle_errors
def restore(backup_id: str, preview: bool, force: bool, yes: bool,
            from_profile: str | None) -> None:
    """Restore backup ID into the live database: verified, atomic, with a safety backup.

    Exit 3 when vetoed (orders in flight, an active session, open positions the backup
    lacks without --force), 4 when the backup fails verification.
    """
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.catalog import validate_id
    from dbguard_plugin.operations.restore_plan import carry_out, plan_restore
    from dbguard_plugin.settings.profile_file import ProfileFile

    validate_id(backup_id)
    guard = open_guard()
    # Wherever the table is printed, LOST is counted (a scan by primary key): a '-' there
    # read as "nothing lost" to operators restoring with --yes. Only --json without
    # --preview prints no table, so only it skips the scan.
    table = preview or not options().json
    plan = plan_restore(guard, backup_id, profiles=ProfileFile.locate(config_path()),
                        db_url=db_url(), from_profile=from_profile, force=force,
                        rows_lost=table)
    manifest = plan.manifest
    if table:
        emit({"backup": manifest.as_dict(), "preview": plan.changes.as_dict()},
             f"restore {manifest.id} ({manifest.reason}, {manifest.created}) into "
             f"{guard.location.redacted}:\n{plan.changes.render()}")
    if preview:
        return
    if not force:
        plan.refuse_dropping()
    confirm(f"Restore {manifest.id} into {guard.location.redacted}?", yes)
    with LazyBar("restoring", enabled=progress_shown()) as bar:
        outcome = carry_out(guard, plan, force=force, progress=bar)
    emit(outcome.as_dict(),
         f"restored {outcome.backup_id} in {outcome.duration_s:.2f} s; "
         f"'dbguard rollback' puts back safety backup {outcome.safety_id or '(none)'}"
         + _resolved(outcome))


@click.command()
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@yes_option
@common
@handle_errors
def rollback(force: bool, yes: bool) -> None:
    """Undo the last restore, rollback or recovery from its safety backup."""
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.operations import restore as engine
    from dbguard_plugin.operations.restore_plan import rollback_target

    guard = open_guard()
    guard.refuse_unguardable(Operation.RESTORE)
    last = rollback_target(guard)
    confirm(f"Roll back the last {last.get('operation')} (of {last.get('backup_id')}) by "
            f"restoring safety backup {last['safety_id']}?", yes)
    with LazyBar("rolling back", enabled=progress_shown()) as bar:
        outcome = engine.rollback(guard, force=force, progress=bar)
    emit(outcome.as_dict(),
         f"rolled back: the database holds {outcome.backup_id} again "
         f"({outcome.duration_s:.2f} s); safety backup {outcome.safety_id or '(none)'}"
         + _resolved(outcome))


def _resolved(outcome: Outcome) -> str:
    if not outcome.resolved:
        return ""
    return (f"\nthis settles the interrupted {outcome.resolved} that recovery could not "
            "decide (recorded in the audit log)")
