"""A restore, rollback or move killed by SIGKILL at any step leaves the database exactly old
or exactly new, and the next ``dbguard`` command finishes or undoes what it left.

``DBGUARD_CRASH_AT=<point>`` makes the real ``python -m dbguard_plugin`` process kill
itself with SIGKILL at that step. Before each crash the live database holds the "old"
content and a backup holds the "new" content (several MiB, so the copy into the live
database takes several steps of the backup API). After the crash the next real command
(``dbguard status`` / ``dbguard backups``) recovers; then the database must open, pass
``integrity_check`` and hold exactly one of the two contents, and nothing of dbguard's
(journal, ``.tmp-`` file, data file without a manifest) may be left.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from crash_cases import (
    CRASH_ENV,
    JOURNAL,
    MOVE_POINTS,
    RESTORE_POINTS,
    STEP_PAGES,
    assert_catalog_sound,
    leftovers,
    make_move_setup,
    make_new_database,
    make_old,
)
from sqlite_files import content_digest, integrity, page_count

from dbguard_plugin.settings.config import Config

# -- restore ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(RESTORE_POINTS))
def test_restore_killed_at_any_point_leaves_old_or_new(
    point, tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    expected, said, journal_left = RESTORE_POINTS[point]
    if point == "backup:compressed":
        config_file = tmp_path / "bot.json"
        config_file.write_text(json.dumps({"db_url": db_url,
                                           "dbguard": {"compression": "gzip"}}))
        where = ["--config", str(config_file)]
        config = Config.load(config_file)
    else:
        where = ["--db", db_url]
        config = Config(db_url=db_url)
    make_new_database(db_path)
    assert page_count(db_path) > 2 * STEP_PAGES  # the copy takes several steps
    backup = make_guard(config).backup()
    new = content_digest(db_path)  # what the backup holds
    catalog = state_dir / "backups"
    if point == "restore:rolling-back":
        # The backup verifies (its file is intact) but its manifest's row counts are
        # wrong, so the check after the copy fails and the safety backup goes back.
        manifest_path = catalog / f"{backup.id}.json"
        data = json.loads(manifest_path.read_text())
        data["tables"]["t"] += 1
        manifest_path.write_text(json.dumps(data))
    make_old(db_path)
    old = content_digest(db_path)
    assert old != new

    crashed = run_cli("restore", backup.id, *where, "--yes",
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert (state_dir / JOURNAL).exists() is journal_left
    if point == "restore:copying":  # uncommitted frames of the killed copy are in the WAL
        assert Path(f"{db_path}-wal").stat().st_size > 2 << 20

    recovered = run_cli("status", *where)
    assert recovered.returncode == 0, recovered.stderr
    if said is None:
        assert "recovered:" not in recovered.stderr
    else:
        assert f"dbguard: recovered: {said}" in recovered.stderr, recovered.stderr
    if said in ("undid", "finished"):
        assert backup.id in recovered.stderr

    assert integrity(db_path) == ["ok"]
    now = content_digest(db_path)
    assert now in (old, new), f"{point}: the database holds neither content"
    outcome = "old" if now == old else "new"
    assert outcome == expected, f"{point}: the database holds the {outcome} content"

    assert leftovers(state_dir) == [], f"{point}: left {leftovers(state_dir)}"
    ids = assert_catalog_sound(catalog, db_path)
    assert backup.id in ids
    last = state_dir / "last-replacement.json"
    if outcome == "new":
        recorded = json.loads(last.read_text())
        assert recorded["backup_id"] == backup.id
        assert recorded["safety_id"] in ids  # the rollback it promises is possible...
        safety = catalog / f"{recorded['safety_id']}.sqlite"
        assert content_digest(safety) == old  # ...and puts back exactly the old content
    else:
        assert not last.exists()


def test_restore_killed_mid_copy_of_a_rollback_journal_database(
    db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    """The same in rollback-journal mode: the killed copy leaves a hot journal, which the
    recovering command must roll back, not trip over."""
    make_new_database(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    backup = make_guard(Config(db_url=db_url)).backup()
    new = content_digest(db_path)
    make_old(db_path)
    old = content_digest(db_path)

    crashed = run_cli("restore", backup.id, "--db", db_url, "--yes",
                      env=child_env(**{CRASH_ENV: "restore:copying"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert Path(f"{db_path}-journal").exists()  # a hot journal: the copy had not committed

    recovered = run_cli("status", "--db", db_url)
    assert recovered.returncode == 0, recovered.stderr
    assert "dbguard: recovered: undid" in recovered.stderr
    assert integrity(db_path) == ["ok"]
    assert content_digest(db_path) == old != new
    assert leftovers(state_dir) == []


def test_gzip_restore_killed_leaves_no_decompressed_scratch_copy(
    tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    """A gzip backup is decompressed to a ``.tmp-read-<pid>-`` scratch copy (as big as the
    database) for the restore; once that pid is dead, the next command removes it."""
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"db_url": db_url, "dbguard": {"compression": "gzip"}}))
    make_new_database(db_path, bulk_rows=1500)
    backup = make_guard(Config.load(config_file)).backup()
    make_old(db_path)
    old = content_digest(db_path)

    crashed = run_cli("restore", backup.id, "--config", str(config_file), "--yes",
                      env=child_env(**{CRASH_ENV: "restore:copying"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    catalog = state_dir / "backups"
    assert any(n.startswith(".tmp-read-") for n in os.listdir(catalog))

    recovered = run_cli("status", "--config", str(config_file))
    assert recovered.returncode == 0, recovered.stderr
    assert "dbguard: recovered: undid" in recovered.stderr
    assert content_digest(db_path) == old
    assert leftovers(catalog) == [], "the killed restore's scratch copy is still there"


# -- move -------------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(MOVE_POINTS))
def test_move_killed_at_any_point_leaves_one_database_in_use(
    point, tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    expected, said, delete_old = MOVE_POINTS[point]
    config_file, text, target, new_url, digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    assert page_count(db_path) > STEP_PAGES
    new_path = target / db_path.name
    new_state = new_path.with_name(new_path.name + ".dbguard")
    (backup_id,) = [n[:-5] for n in os.listdir(state_dir / "backups") if n.endswith(".json")
                    and not n.startswith(".")]

    args = ["move", str(target), "--config", str(config_file), "--yes"]
    crashed = run_cli(*args, *(["--delete-old"] if delete_old else []),
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    listed = run_cli("backups", "--config", str(config_file), "--json")
    assert listed.returncode == 0, listed.stderr
    if said is None:
        assert "recovered:" not in listed.stderr
    else:
        assert f"dbguard: recovered: {said}" in listed.stderr, listed.stderr
    # The backups went with the database (or stayed with it) and are listed either way.
    assert [row["id"] for row in json.loads(listed.stdout)] == [backup_id]

    after = config_file.read_text()
    named = json.loads(after)["db_url"]
    assert named in (db_url, new_url)
    outcome = "old" if named == db_url else "new"
    assert outcome == expected, f"{point}: the config names the {outcome} path"
    # Only the URL changed in the config file, byte for byte.
    assert after == (text if outcome == "old" else text.replace(db_url, new_url))
    live = db_path if outcome == "old" else new_path
    assert integrity(live) == ["ok"]
    assert content_digest(live) == digest
    if outcome == "new":
        assert db_path.exists() is not delete_old
        catalog = new_state / "backups"
        assert not (state_dir / "backups").exists()
    else:
        catalog = state_dir / "backups"

    for directory in (state_dir, new_state, target):
        assert leftovers(directory) == [], f"{point}: {directory}: {leftovers(directory)}"
    assert assert_catalog_sound(catalog, live) == [backup_id]
    # The catalog's marker names the database it now belongs to.
    marker = json.loads((catalog / ".dbguard-catalog.json").read_text())
    assert marker["database"] == str(live)
    # ... and remembers where it lived, so backups from before the move still restore.
    assert marker.get("formerly", []) == ([] if live == db_path else [str(db_path)])


def test_move_killed_after_the_rename_leaves_no_stray_file_at_the_new_place(
    tmp_path, db_path, db_url, make_guard, run_cli, child_env
):
    """Killed between renaming the copy into place and journaling the switch: recovery
    undoes the move, so the copy at the new place must go too, and the same move can be
    made again."""
    config_file, _text, target, new_url, digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    args = ["move", str(target), "--config", str(config_file), "--yes"]
    crashed = run_cli(*args, env=child_env(**{CRASH_ENV: "move:renamed"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    recovered = run_cli("status", "--config", str(config_file))
    assert "recovered: undid the interrupted move" in recovered.stderr
    assert json.loads(config_file.read_text())["db_url"] == db_url
    assert sorted(os.listdir(target)) == [], "an undone move left a database at the new place"

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(config_file.read_text())["db_url"] == new_url
    assert content_digest(target / db_path.name) == digest
