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
test_crash_matrix.py imports :func:`crash_then_write` and :func:`move_crash_then_write`);
this module runs a sample of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_restore_crash import (
    MOVE_POINTS,
    RESTORE_POINTS,
    make_move_setup,
    make_new_database,
    make_old,
)

from dbguard_plugin import Guard, signals
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config

CRASH_ENV = "DBGUARD_CRASH_AT"
JOURNAL = "operation.json"
#: about 5 MiB: the copy into the live database takes two steps of the backup API
BULK = 1200
UNDECIDED = "recovery could not decide"

#: What a bot restarted after the crash does: rows, then (mode "ddl") a migration, then
#: VACUUM, each committed. argv: database path, mode ("ddl", "rows" or "vacuum")
WRITER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=30)
    if sys.argv[2] in ("ddl", "rows"):
        conn.executemany("INSERT INTO t (v) VALUES (?)",
                         [(f"after-crash-{i}",) for i in range(1, 6)])
        conn.commit()
    if sys.argv[2] == "ddl":
        conn.execute("ALTER TABLE t ADD COLUMN note TEXT")
        conn.execute("UPDATE t SET note = 'migrated' WHERE v LIKE 'after-crash-%'")
        conn.commit()
    conn.execute("VACUUM")
    conn.close()
    print("DONE", flush=True)
"""


# -- helpers (the torture matrix uses them too) -----------------------------------------


def logical(path: Path) -> str:
    """The test's own view of what a database holds: its schema and every row."""
    conn = sqlite3.connect(path)
    try:
        digest = hashlib.sha256()
        for row in conn.execute("SELECT type, name, sql FROM sqlite_master "
                                "WHERE name NOT LIKE 'sqlite_%' ORDER BY name"):
            digest.update(repr(row).encode())
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                     "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def written_rows(path: Path) -> list[tuple[Any, ...]]:
    """The rows the writer committed after the crash, with the migrated column if any."""
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
        shown = "v, note" if "note" in columns else "v"
        return conn.execute(f"SELECT {shown} FROM t WHERE v LIKE 'after-crash-%' "
                            "ORDER BY v").fetchall()
    finally:
        conn.close()


def expected_rows(mode: str) -> list[tuple[Any, ...]]:
    if mode == "vacuum":
        return []
    if mode == "ddl":
        return [(f"after-crash-{i}", "migrated") for i in range(1, 6)]
    return [(f"after-crash-{i}",) for i in range(1, 6)]


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def write_after_crash(spawn: Callable[..., Any], path: Path, mode: str) -> str:
    writer = spawn(WRITER, str(path), mode, ready="DONE")
    assert writer.wait() == 0, writer.stderr
    return logical(path)


def crash_then_write(
    operation: str, point: str, mode: str, *, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., Guard], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any],
) -> dict[str, Any]:
    """Kill *operation* (restore or rollback) at *point*, let another process write
    (*mode*), recover with ``dbguard status``; check that recovery changed nothing it
    could not account for and said the truth. Returns what the caller may go on with."""
    make_new_database(db_path, bulk_rows=BULK)
    where = ["--db", db_url]
    config = Config(db_url=db_url)
    if point == "backup:compressed":  # reached only by a compressed safety backup
        config_file = db_path.with_name("bot.json")
        config_file.write_text(json.dumps({"db_url": db_url,
                                           "dbguard": {"compression": "gzip"}}))
        where, config = ["--config", str(config_file)], Config.load(config_file)
    guard = make_guard(config)
    backup = guard.backup()
    new = logical(db_path)
    make_old(db_path)
    old = logical(db_path)
    catalog = state_dir / "backups"
    if operation == "rollback":
        restore(guard, backup.id)  # live: new; its safety backup: old
        target = json.loads((state_dir / "last-replacement.json").read_text())["safety_id"]
        args = ["rollback", *where, "--yes"]
        before, after = new, old
    else:
        target, args, before, after = backup.id, ["restore", backup.id, *where, "--yes"], \
            old, new
    if point == "restore:rolling-back":  # the post-check fails: its counts were edited
        manifest = catalog / f"{target}.json"
        data = json.loads(manifest.read_text())
        data["tables"]["t"] += 1
        manifest.write_text(json.dumps(data))
    crashed = run_cli(*args, env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    journal_left = (state_dir / JOURNAL).exists()
    assert journal_left is RESTORE_POINTS[point][2]
    at_crash = logical(db_path)
    assert at_crash in (before, after), f"{point}: SQLite left neither state"
    intent = json.loads((state_dir / JOURNAL).read_text()) if journal_left else {}

    written = write_after_crash(spawn, db_path, mode)
    recovered = run_cli("status", *where)
    assert recovered.returncode == 0, recovered.stderr
    said = recovered.stderr
    assert integrity(db_path) == ["ok"]
    assert written_rows(db_path) == expected_rows(mode), f"{point}: committed rows lost"

    if not journal_left:
        assert UNDECIDED not in said
        assert "recovered: finished" not in said
        assert "recovered: undid" not in said
        assert logical(db_path) == written, f"{point}: recovery changed the database"
    elif mode == "vacuum":  # a VACUUM changes pages, not content: recovery decides
        expected, verb = RESTORE_POINTS[point][0], RESTORE_POINTS[point][1]
        assert f"dbguard: recovered: {verb}" in said, said
        assert logical(db_path) == (before if expected == "old" else after)
        assert not (state_dir / JOURNAL).exists()
    else:
        safety = intent["safety_id"]
        assert logical(db_path) == written, f"{point}: recovery changed the database"
        assert f"dbguard: {UNDECIDED} the interrupted {operation} of backup {target}" in said
        assert (f"found: the database holds neither backup {target} (what the {operation} "
                f"writes) nor safety backup {safety}") in said, said
        assert "nothing was changed" in said
        assert "dbguard recover --keep" in said
        assert f"dbguard restore {safety} --yes" in said
        assert "recovered:" not in said
        kept = json.loads((state_dir / JOURNAL).read_text())
        assert kept["undecided"]
        assert kept["backup_id"] == target
        assert (catalog / f"{safety}.json").exists(), "the safety backup is gone"
    return {"intent": intent, "written": written, "before": before, "after": after,
            "journal_left": journal_left}


#: point -> (the place in use after recovery when the bot wrote to the place the
#: configuration named, what recovery says)
MOVE_AFTER_WRITES: dict[str, tuple[str, str | None]] = {
    point: (place, said) for point, (place, said, _delete) in MOVE_POINTS.items()}
# the switch was journaled but the configuration not yet rewritten: the bot wrote to the
# old place, so finishing would leave its rows behind
MOVE_AFTER_WRITES["move:journaled"] = ("old", "undid")


def move_crash_then_write(
    point: str, *, tmp_path: Path, db_path: Path, db_url: str,
    make_guard: Callable[..., Guard], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any],
) -> None:
    """Kill a move at *point*; the bot writes to the database its configuration names;
    recovery must leave that database in use, unchanged."""
    place, verb = MOVE_AFTER_WRITES[point]
    config_file, _text, target, _new_url, _digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    new_path = target / db_path.name
    extra = ["--delete-old"] if point == "move:old-deleted" else []
    crashed = run_cli("move", str(target), "--config", str(config_file), "--yes", *extra,
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    named = json.loads(config_file.read_text())["db_url"]
    in_use = db_path if named == db_url else new_path
    written = write_after_crash(spawn, in_use, "ddl")

    recovered = run_cli("status", "--config", str(config_file))
    assert recovered.returncode == 0, recovered.stderr
    now = json.loads(config_file.read_text())["db_url"]
    live = db_path if now == db_url else new_path
    assert ("old" if live == db_path else "new") == place, recovered.stderr
    assert live == in_use, f"{point}: the database in use moved away from the bot's rows"
    assert logical(live) == written, f"{point}: recovery changed the database in use"
    assert written_rows(live) == expected_rows("ddl")
    assert integrity(live) == ["ok"]
    if verb is None:
        assert "recovered:" not in recovered.stderr
    else:
        assert f"dbguard: recovered: {verb} the interrupted move to {new_path}" in \
            recovered.stderr
    if point == "move:journaled":  # undone, and the copy it cannot account for is kept
        assert f"the copy at {new_path} is kept" in recovered.stderr
        assert "no longer holds what the copy" in recovered.stderr
        assert new_path.exists()
    assert UNDECIDED not in recovered.stderr


# -- the crash points, with writes after the crash ----------------------------------------


SAMPLE = [("restore", "backup:renamed"), ("restore", "restore:journal-written"),
          ("restore", "restore:copying"), ("restore", "restore:copied"),
          ("restore", "restore:recorded"), ("restore", "restore:rolling-back"),
          ("restore", "restore:done"), ("rollback", "restore:copying"),
          ("rollback", "restore:checked")]


@pytest.mark.parametrize(("operation", "point"), SAMPLE, ids=[f"{o}-{p}" for o, p in SAMPLE])
def test_killed_then_the_bot_migrates_then_recovery_keeps_every_row(
    operation, point, db_path, db_url, state_dir, make_guard, run_cli, child_env, spawn
):
    crash_then_write(operation, point, "ddl", db_path=db_path, db_url=db_url,
                     state_dir=state_dir, make_guard=make_guard, run_cli=run_cli,
                     child_env=child_env, spawn=spawn)


@pytest.mark.parametrize("point", ["restore:journal-written", "restore:copying",
                                   "restore:copied", "restore:checked",
                                   "restore:recorded", "restore:rolling-back"])
def test_a_vacuum_after_the_crash_does_not_stop_recovery_from_deciding(
    point, db_path, db_url, state_dir, make_guard, run_cli, child_env, spawn
):
    crash_then_write("restore", point, "vacuum", db_path=db_path, db_url=db_url,
                     state_dir=state_dir, make_guard=make_guard, run_cli=run_cli,
                     child_env=child_env, spawn=spawn)


def test_rows_and_a_vacuum_after_a_committed_copy_are_not_called_finished(
    db_path, db_url, state_dir, make_guard, run_cli, child_env, spawn
):
    """The copy committed, then the bot wrote and vacuumed: the database holds the
    backup plus rows, so "finished: the database holds that backup" would be false."""
    crash_then_write("restore", "restore:copied", "rows", db_path=db_path, db_url=db_url,
                     state_dir=state_dir, make_guard=make_guard, run_cli=run_cli,
                     child_env=child_env, spawn=spawn)


@pytest.mark.parametrize("point", ["move:copying", "move:renamed", "move:journaled",
                                   "move:configured", "move:old-deleted"])
def test_killed_move_then_the_bot_writes_then_recovery_keeps_every_row(
    point, tmp_path, db_path, db_url, make_guard, run_cli, child_env, spawn
):
    move_crash_then_write(point, tmp_path=tmp_path, db_path=db_path, db_url=db_url,
                          make_guard=make_guard, run_cli=run_cli, child_env=child_env,
                          spawn=spawn)


# -- the operator's two choices -----------------------------------------------------------


@pytest.fixture
def undecided(db_path, db_url, state_dir, make_guard, run_cli, child_env, spawn):
    """A restore killed after its copy committed, then a migration: recovery cannot
    decide. Returns what crash_then_write saw."""
    return crash_then_write("restore", "restore:copied", "ddl", db_path=db_path,
                            db_url=db_url, state_dir=state_dir, make_guard=make_guard,
                            run_cli=run_cli, child_env=child_env, spawn=spawn)


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
    if environment != "production":
        assert guard.admit_order(timeout=0)
        guard.withdraw_admission()
        return
    assert guard.paused is not None
    assert "dbguard recover --keep" in guard.paused
    assert not guard.admit_order(timeout=0)
    guard.backup()  # a new verified backup is not a decision
    assert not guard.admit_order(timeout=0)
    kept = run_cli("recover", "--keep", "--db", db_url)
    assert kept.returncode == 0, kept.stderr
    assert guard.admit_order(timeout=0)
    guard.withdraw_admission()
