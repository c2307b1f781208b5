"""Recovery decides from content, and never destroys what it cannot account for.

A restore, rollback or move is SIGKILLed at a crash point (``DBGUARD_CRASH_AT``); then
another process does what a restarted bot does: it commits rows, runs a migration
(``ALTER TABLE ... ADD COLUMN``) and a ``VACUUM``. Then the next real ``dbguard`` command
recovers. Whatever the point, no committed row may be lost, and what recovery says must
be true: a database that is neither the state before nor the state after is left exactly
as it is, with its journal and safety backup, and the operator is told the two commands
that choose. Both commands are run here too, and a production bot refuses orders until
one of them has been run.

The cases of every crash point run in the torture suite (tests/torture/
test_crash_then_writes.py, with the same scenarios from crash_cases.py); this module runs
a sample of them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from crash_cases import (
    JOURNAL,
    UNDECIDED,
    expected_rows,
    logical,
    orders_wait_for_the_decision,
    written_rows,
)

from dbguard_plugin import Guard, signals
from dbguard_plugin.settings.config import Config

# -- the crash points, with writes after the crash ----------------------------------------


SAMPLE = [("restore", "backup:renamed"), ("restore", "restore:journal-written"),
          ("restore", "restore:copying"), ("restore", "restore:copied"),
          ("restore", "restore:recorded"), ("restore", "restore:rolling-back"),
          ("restore", "restore:done"), ("rollback", "restore:copying"),
          ("rollback", "restore:checked")]


@pytest.mark.parametrize(("operation", "point"), SAMPLE, ids=[f"{o}-{p}" for o, p in SAMPLE])
def test_killed_then_the_bot_migrates_then_recovery_keeps_every_row(
    operation, point, crash_then_write
):
    crash_then_write(operation, point, "ddl")


@pytest.mark.parametrize("point", ["restore:journal-written", "restore:copying",
                                   "restore:copied", "restore:checked",
                                   "restore:recorded", "restore:rolling-back"])
def test_a_vacuum_after_the_crash_does_not_stop_recovery_from_deciding(
    point, crash_then_write
):
    crash_then_write("restore", point, "vacuum")


def test_rows_and_a_vacuum_after_a_committed_copy_are_not_called_finished(
    crash_then_write
):
    """The copy committed, then the bot wrote and vacuumed: the database holds the
    backup plus rows, so "finished: the database holds that backup" would be false."""
    crash_then_write("restore", "restore:copied", "rows")


@pytest.mark.parametrize("point", ["move:copying", "move:renamed", "move:journaled",
                                   "move:configured", "move:old-deleted"])
def test_killed_move_then_the_bot_writes_then_recovery_keeps_every_row(
    point, move_crash_then_write
):
    move_crash_then_write(point)


# -- the operator's two choices -----------------------------------------------------------


@pytest.fixture
def undecided(crash_then_write):
    """A restore killed after its copy committed, then a migration: recovery cannot
    decide. Returns what crash_then_write saw."""
    return crash_then_write("restore", "restore:copied", "ddl")


def test_recover_shows_the_undecided_state_with_exit_5(undecided, db_url, run_cli):
    shown = run_cli("recover", "--db", db_url)
    assert shown.returncode == 5, shown.stderr
    assert UNDECIDED in shown.stdout
    assert "dbguard recover --keep" in shown.stdout
    as_json = run_cli("recover", "--db", db_url, "--json")
    assert as_json.returncode == 5, as_json.stderr
    data = json.loads(as_json.stdout)
    safety = undecided["intent"]["safety_id"]
    assert data["recovered"] == []
    assert data["waiting"] is False
    assert data["undecided"]["safety_id"] == safety
    assert data["undecided"]["commands"] == ["dbguard recover --keep",
                                             f"dbguard restore {safety} --yes"]
    assert data["undecided"]["found"].startswith("the database holds neither backup")
    status = run_cli("status", "--json", "--db", db_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["recovery"] == {"undecided": data["undecided"]}


def test_keep_closes_the_journal_and_changes_nothing(
    undecided, db_path, db_url, state_dir, run_cli
):
    kept = run_cli("recover", "--keep", "--db", db_url)
    assert kept.returncode == 0, kept.stderr
    assert "kept" in kept.stdout
    assert "is closed" in kept.stdout
    assert logical(db_path) == undecided["written"]
    assert not (state_dir / JOURNAL).exists()
    (entry,) = [json.loads(line) for line in (state_dir / "audit.jsonl").read_text()
                .splitlines() if '"recover"' in line]
    assert entry["decision"] == "kept the database as it was"
    assert entry["interrupted"]["backup_id"] == undecided["intent"]["backup_id"]
    after = run_cli("status", "--db", db_url)
    assert after.returncode == 0
    assert UNDECIDED not in after.stderr
    assert run_cli("recover", "--db", db_url).returncode == 0
    again = run_cli("recover", "--keep", "--db", db_url)
    assert again.returncode == 1
    assert "awaits a decision" in again.stderr


def test_restoring_the_safety_backup_settles_it_and_rollback_brings_the_rows_back(
    undecided, db_path, db_url, state_dir, run_cli
):
    safety = undecided["intent"]["safety_id"]
    put_back = run_cli("restore", safety, "--db", db_url, "--yes")
    assert put_back.returncode == 0, put_back.stderr
    assert UNDECIDED in put_back.stderr  # said before the command's own work
    assert "this settles the interrupted restore" in put_back.stdout
    assert logical(db_path) == undecided["before"]
    assert not (state_dir / JOURNAL).exists()
    audit = (state_dir / "audit.jsonl").read_text()
    assert f'"decision": "restore of backup {safety}"' in audit
    # What the operator chose against is itself the new safety backup: nothing is lost.
    back = run_cli("rollback", "--db", db_url, "--yes")
    assert back.returncode == 0, back.stderr
    assert logical(db_path) == undecided["written"]
    assert written_rows(db_path) == expected_rows("ddl")


def test_a_failed_restore_leaves_the_decision_pending(
    undecided, db_path, db_url, state_dir, run_cli
):
    """The operator's restore fails after writing (its check fails) and is undone: the
    undecided journal it would have resolved is pending again, unchanged."""
    safety = undecided["intent"]["safety_id"]
    manifest = state_dir / "backups" / f"{safety}.json"
    data = json.loads(manifest.read_text())
    data["tables"]["t"] += 1
    manifest.write_text(json.dumps(data))
    before = json.loads((state_dir / JOURNAL).read_text())
    failed = run_cli("restore", safety, "--db", db_url, "--yes")
    assert failed.returncode == 1, failed.stderr
    assert "the database was put back" in failed.stderr
    assert logical(db_path) == undecided["written"]
    assert json.loads((state_dir / JOURNAL).read_text()) == before
    assert run_cli("recover", "--db", db_url).returncode == 5


def test_no_other_operation_takes_the_undecided_journal_s_place(
    undecided, tmp_path, db_path, db_url, state_dir, run_cli
):
    before = (state_dir / JOURNAL).read_text()
    target = tmp_path / "disk2"
    target.mkdir()
    moved = run_cli("move", str(target), "--db", db_url, "--yes")
    assert moved.returncode == 1, moved.stderr
    assert "awaits an operator's decision" in moved.stderr
    assert (state_dir / JOURNAL).read_text() == before
    assert list(target.iterdir()) == []
    assert logical(db_path) == undecided["written"]


# -- the bot ------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["production", "development"])
def test_the_bot_is_told_and_production_refuses_orders_until_a_choice(
    environment, undecided, db_url, make_guard, run_cli, caplog
):
    heard: list[dict[str, Any]] = []

    def receiver(sender: Guard, **kwargs: Any) -> None:
        heard.append(kwargs)

    signals.recovery_undecided.connect(receiver)
    try:
        guard = make_guard(Config(db_url=db_url, environment=environment))
        with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
            guard.start_session("S-after-migration")
    finally:
        signals.recovery_undecided.disconnect(receiver)
    assert heard
    assert heard[0]["backup_id"] == undecided["intent"]["backup_id"]
    assert heard[0]["commands"][0] == "dbguard recover --keep"
    assert UNDECIDED in caplog.text
    orders_wait_for_the_decision(guard, environment, run_cli, db_url)
