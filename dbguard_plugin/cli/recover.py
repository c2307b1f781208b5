"""``dbguard recover``: finish or undo an interrupted operation, or say why not."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from dbguard_plugin.cli.database import open_guard
from dbguard_plugin.cli.options import EXIT_FAILURE, EXIT_UNDECIDED, common, emit, handle_errors

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard


@click.command()
@click.option("--keep", is_flag=True,
              help="Keep the database as it is now and close the interrupted operation "
              "recovery could not decide (recorded in the audit log).")
@common
@handle_errors
def recover(keep: bool) -> None:
    """Finish or undo an interrupted operation, or show why recovery could not decide.

    Exit 0 when nothing is left pending, 5 when an interrupted operation awaits your
    decision ('dbguard recover --keep', or 'dbguard restore SAFETY_ID --yes'), 1 when
    one waits for the lease (a bot has orders in flight).
    """
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.catalog import journal
    from dbguard_plugin.operations import recovery

    guard = open_guard(recover=False)
    if keep:
        _keep(guard)
        return
    try:
        said = recovery.recover(guard, reexamine=True)
        pending = recovery.undecided(guard)
    except journal.UnreadableJournal as exc:
        emit({"recovered": [], "undecided": None, "unreadable": str(exc), "waiting": False},
             str(exc))
        sys.exit(EXIT_UNDECIDED)
    waiting = pending is None and journal.path_in(guard.location.state_dir).exists()
    lines = [f"recovered: {sentence}" for sentence in said]
    if pending is not None:
        lines += pending.lines()
    elif waiting:
        lines.append("an interrupted operation waits for the lease (a bot has orders in "
                     "flight, or an operation runs): run 'dbguard recover' again when the "
                     "bot is idle")
    elif not said:
        lines.append(f"nothing to recover for {guard.location.redacted}")
    emit({"recovered": said, "undecided": pending.as_dict() if pending else None,
          "waiting": waiting}, "\n".join(lines))
    if pending is not None:
        sys.exit(EXIT_UNDECIDED)
    if waiting:
        sys.exit(EXIT_FAILURE)


def _keep(guard: Guard) -> None:
    """--keep: the database stays as it is and the undecided operation is closed."""
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.core import audit
    from dbguard_plugin.operations import recovery

    kept = recovery.keep(guard, audit.operator())
    if kept.operation == "unknown":  # a damaged journal, moved aside
        emit({"kept": kept.as_dict()}, f"kept {kept.database} as it is: {kept.found} "
             f"(recorded in {guard.audit_path})")
        return
    safety = (f"; safety backup {kept.safety_id} stays in the catalog as an ordinary "
              "backup" if kept.safety_id else "")
    emit({"kept": kept.as_dict()},
         f"kept {kept.database} as it is: the interrupted {kept.operation} is closed "
         f"(recorded in {guard.audit_path}){safety}")
