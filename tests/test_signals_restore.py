"""The replacement engine's signals: ``restore_started``, ``database_replaced``,
``restore_failed``, ``rolled_back``, ``moved`` and ``recovery_undecided``, each sent with
the guard as sender and its documented keyword arguments, in a real scenario on real
files. Receivers take ``**extra``.
"""

from __future__ import annotations

import json
import os
import signal as posix_signal
import sqlite3
from pathlib import Path

import pytest
from sqlite_files import BACKUP_ROWS, LIVE_ROWS, change_live, make_db, rows

from dbguard_plugin import signals
from dbguard_plugin.operations import move as mover
from dbguard_plugin.operations import recovery
from dbguard_plugin.operations import restore as engine
from dbguard_plugin.operations.restore import RestoreError
from dbguard_plugin.settings.config import Config


@pytest.fixture
def restorable(db_path, db_url, make_guard):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url))
    manifest = guard.backup()
    change_live(db_path)
    return guard, manifest


def _spoil_row_counts(guard, manifest) -> None:
    """The backup still verifies (its file is intact), but its manifest's row counts are
    wrong, so the check after the copy fails for real."""
    path = guard.catalog.manifest_path(manifest.id)
    data = json.loads(path.read_text())
    data["tables"]["t"] += 1
    path.write_text(json.dumps(data))


def test_restore_started_and_database_replaced(restorable, received, db_path):
    guard, manifest = restorable
    started = received(signals.restore_started, probe=lambda: rows(db_path))
    replaced = received(signals.database_replaced, probe=lambda: rows(db_path))
    failed = received(signals.restore_failed)
    rolled = received(signals.rolled_back)

    outcome = engine.restore(guard, manifest.id)
    # restore_started: before the write (the safety backup exists, the rows are the old ones)
    assert started == [(guard, {"backup_id": manifest.id, "operation": "restore",
                                "_probe": LIVE_ROWS})]
    assert guard.catalog.get(outcome.safety_id).reason == "pre-restore"
    # database_replaced: after it, checked
    assert replaced == [(guard, {"operation": "restore", "backup_id": manifest.id,
                                 "safety_id": outcome.safety_id, "_probe": BACKUP_ROWS})]
    assert failed == []
    assert rolled == []


def test_restore_failed_after_the_check_puts_the_safety_backup_back(
    restorable, received, db_path, state_dir
):
    guard, manifest = restorable
    _spoil_row_counts(guard, manifest)
    started = received(signals.restore_started)
    failed = received(signals.restore_failed, probe=lambda: rows(db_path))
    replaced = received(signals.database_replaced)

    with pytest.raises(RestoreError, match="the database was put back from safety backup"):
        engine.restore(guard, manifest.id)
    assert started == [(guard, {"backup_id": manifest.id, "operation": "restore"})]
    ((sender, args),) = failed
    assert sender is guard
    assert set(args) == {"backup_id", "error", "rolled_back", "_probe"}
    assert args["backup_id"] == manifest.id
    assert "row counts differ" in args["error"]
    assert args["rolled_back"] is True
    assert args["_probe"] == LIVE_ROWS  # already back when the signal goes out
    assert replaced == []
    assert rows(db_path) == LIVE_ROWS
    assert not (state_dir / "operation.json").exists()


def test_restore_failed_with_no_database_to_put_back(restorable, received, db_path):
    guard, manifest = restorable
    _spoil_row_counts(guard, manifest)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db_path}{suffix}"):
            os.unlink(f"{db_path}{suffix}")
    failed = received(signals.restore_failed)

    with pytest.raises(RestoreError, match="there was no live database to put back"):
        engine.restore(guard, manifest.id)
    ((sender, args),) = failed
    assert sender is guard
    assert args["backup_id"] == manifest.id
    assert args["rolled_back"] is False


def test_rolled_back(restorable, received, db_path):
    guard, manifest = restorable
    first = engine.restore(guard, manifest.id)
    started = received(signals.restore_started)
    replaced = received(signals.database_replaced)
    rolled = received(signals.rolled_back, probe=lambda: rows(db_path))

    outcome = engine.rollback(guard)
    assert outcome.backup_id == first.safety_id
    assert started == [(guard, {"backup_id": first.safety_id, "operation": "rollback"})]
    assert replaced == [(guard, {"operation": "rollback", "backup_id": first.safety_id,
                                 "safety_id": outcome.safety_id})]
    assert rolled == [(guard, {"backup_id": first.safety_id, "_probe": LIVE_ROWS})]


def test_database_replaced_by_recovery(
    restorable, received, run_cli, child_env, db_url, db_path
):
    guard, manifest = restorable
    crashed = run_cli("restore", manifest.id, "--db", db_url, "--yes",
                      env=child_env(DBGUARD_CRASH_AT="restore:copied"))
    assert crashed.returncode == -posix_signal.SIGKILL, crashed.stderr
    safety_id = json.loads(
        (guard.location.state_dir / "operation.json").read_text())["safety_id"]
    started = received(signals.restore_started)
    replaced = received(signals.database_replaced)

    said = recovery.recover(guard)
    assert said == [f"finished the interrupted restore of backup {manifest.id}: the database "
                    "holds that backup, checked"]
    assert replaced == [(guard, {"operation": "recovery", "backup_id": manifest.id,
                                 "safety_id": safety_id})]
    assert started == []  # this process did not start a restore
    assert rows(db_path) == BACKUP_ROWS


def test_recovery_undecided(restorable, received, run_cli, child_env, db_url, db_path):
    """The copy committed, then another process migrated the database: recovery cannot
    decide, changes nothing and says so, every time it runs, until an operator chooses."""
    guard, manifest = restorable
    crashed = run_cli("restore", manifest.id, "--db", db_url, "--yes",
                      env=child_env(DBGUARD_CRASH_AT="restore:copied"))
    assert crashed.returncode == -posix_signal.SIGKILL, crashed.stderr
    safety_id = json.loads(
        (guard.location.state_dir / "operation.json").read_text())["safety_id"]
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE t ADD COLUMN note TEXT")
    conn.commit()
    conn.close()
    undecided = received(signals.recovery_undecided)
    replaced = received(signals.database_replaced)

    assert recovery.recover(guard) == []
    assert recovery.recover(guard) == []
    assert len(undecided) == 2
    sender, kwargs = undecided[0]
    assert sender is guard
    assert set(kwargs) == {"operation", "backup_id", "safety_id", "found", "commands",
                           "database"}
    assert kwargs["operation"] == "restore"
    assert kwargs["backup_id"] == manifest.id
    assert kwargs["safety_id"] == safety_id
    assert kwargs["found"].startswith(f"the database holds neither backup {manifest.id}")
    assert kwargs["commands"] == ["dbguard recover --keep",
                                  f"dbguard restore {safety_id} --yes"]
    assert kwargs["database"] == db_url
    assert replaced == []
    assert rows(db_path) == [(*r, None) for r in BACKUP_ROWS]  # as the migration left it


def test_moved(tmp_path, db_path, db_url, make_guard, received):
    make_db(db_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"db_url": db_url,
                                       "dbguard": {"environment": "development"}}))
    guard = make_guard(Config.load(config_file))
    target = tmp_path / "disk2"
    target.mkdir()
    moved = received(signals.moved, probe=lambda: json.loads(config_file.read_text()))

    outcome = mover.move(guard, str(target), config_path=str(config_file), delete_old=True)
    new_path = target / db_path.name
    ((sender, args),) = moved
    assert sender is guard
    assert args == {"old_path": db_path, "new_path": new_path,
                    "new_url": f"sqlite:///{new_path}", "deleted_old": True,
                    "_probe": {"db_url": f"sqlite:///{new_path}",
                               "dbguard": {"environment": "development"}}}
    assert isinstance(args["old_path"], Path)
    assert isinstance(args["new_path"], Path)
    assert outcome.deleted_old is True
    assert not db_path.exists()
    assert rows(new_path) == BACKUP_ROWS


#: Signal name -> the test that shows it in a real scenario (for the signals overview test).
SCENARIOS = {
    "restore-started": test_restore_started_and_database_replaced,
    "database-replaced": test_database_replaced_by_recovery,
    "restore-failed": test_restore_failed_after_the_check_puts_the_safety_backup_back,
    "rolled-back": test_rolled_back,
    "moved": test_moved,
    "recovery-undecided": test_recovery_undecided,
}


def test_every_replacement_signal_has_a_scenario():
    replacement = {signals.restore_started, signals.database_replaced,
                   signals.restore_failed, signals.rolled_back, signals.moved,
                   signals.recovery_undecided}
    assert {s.name for s in replacement} == set(SCENARIOS)
    assert replacement <= set(signals.ALL)
