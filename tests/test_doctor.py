"""``dbguard doctor``: ok lines on a healthy setup, a warning with the fix for each weak
spot, and exit 1 when something would lose data (no verified backup)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from sqlite_urls import sqlite_url_for

from dbguard_plugin.operations.doctor import FAIL, OK, WARN, diagnose
from dbguard_plugin.settings.config import Config


def make_db(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT)")
    conn.execute("INSERT INTO trades (pair) VALUES ('BTC/USDT')")
    conn.close()


def lines_by_check(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        status, rest = line.split(None, 1)
        check, message = rest.split(": ", 1)
        found[check] = f"{status} {message}"
    return found


def test_healthy_wal_database_with_a_fresh_backup(make_guard, db_path, db_url, run_cli):
    make_db(db_path, "wal")
    newest = make_guard().backup()
    result = run_cli("doctor", "--db", db_url)
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines_by_check(result.stdout)
    assert set(found) == {"database file", "journal mode", "busy timeout", "free space",
                          "permissions", "newest backup"}
    assert all(line.startswith("OK ") for line in found.values()), result.stdout
    assert "WAL" in found["journal mode"]
    assert newest.id in found["newest backup"]
    assert "(manual)" in found["newest backup"]


def test_rollback_journal_database_gets_the_wal_advice(make_guard, db_path, db_url, run_cli):
    make_db(db_path, "delete")
    make_guard().backup()
    result = run_cli("doctor", "--db", db_url)
    assert result.returncode == 0, result.stdout  # a warning is not a failure
    journal = lines_by_check(result.stdout)["journal mode"]
    assert journal.startswith("WARN delete: a backup blocks the bot's writes")
    assert f"sqlite3 '{db_path}' 'PRAGMA journal_mode=WAL'" in journal
    assert "bot stopped" in journal


def test_no_backup_is_a_failure(db_path, db_url, run_cli):
    make_db(db_path, "wal")
    result = run_cli("doctor", "--db", db_url)
    assert result.returncode == 1
    newest = lines_by_check(result.stdout)["newest backup"]
    assert newest.startswith("FAIL no verified backup in ")
    assert "run 'dbguard backup' before going live" in newest


def test_json_findings(make_guard, db_path, db_url, run_cli):
    make_db(db_path, "delete")
    result = run_cli("doctor", "--json", "--db", db_url)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False
    for finding in body["findings"]:
        assert set(finding) == {"check", "status", "message"}
        assert finding["status"] in (OK, WARN, FAIL)
    statuses = {f["check"]: f["status"] for f in body["findings"]}
    assert statuses["journal mode"] == WARN
    assert statuses["newest backup"] == FAIL


def test_loose_permissions_are_named_with_the_chmod(make_guard, db_path, db_url, state_dir,
                                                    run_cli):
    make_db(db_path, "wal")
    manifest = make_guard().backup()
    os.chmod(state_dir, 0o755)
    loose_file = state_dir / "backups" / f"{manifest.id}.json"
    os.chmod(loose_file, 0o644)
    result = run_cli("doctor", "--db", db_url)
    assert result.returncode == 0, result.stdout
    permissions = lines_by_check(result.stdout)["permissions"]
    assert permissions.startswith("WARN readable by others")
    assert f"chmod 700 '{state_dir}'" in permissions
    assert f"chmod 600 '{loose_file}'" in permissions


def test_short_busy_timeout_and_old_backup_warn(make_guard, db_path, db_url):
    make_db(db_path, "wal")
    guard = make_guard(Config(db_url=db_url, busy_timeout=1))
    manifest = guard.backup()
    path = guard.catalog.manifest_path(manifest.id)
    body = json.loads(path.read_text())
    body["created_ts"] -= 2 * 86_400
    path.write_text(json.dumps(body))
    found = {f.check: f for f in diagnose(guard)}
    assert found["busy timeout"].status == WARN
    assert "busy_timeout = 1 s" in found["busy timeout"].message
    assert found["newest backup"].status == WARN
    assert "older than a day" in found["newest backup"].message
    assert "2.0 days old" in found["newest backup"].message


def test_missing_database_file_fails(make_guard, tmp_path):
    missing = tmp_path / "nope.sqlite"
    guard = make_guard(Config(db_url=f"sqlite:///{missing}"))
    found = {f.check: f for f in diagnose(guard)}
    assert found["journal mode"].status == FAIL
    assert f"{missing}: no such database file" in found["journal mode"].message
    assert not missing.exists()  # looking did not create it


@pytest.mark.parametrize("name", ["bot #2", "50%20off", "what?"])
def test_doctor_reads_the_right_file_whatever_its_directory_is_called(
    name, make_guard, tmp_path
):
    """SQLite URIs treat '#', '?' and '%' specially; the doctor must still open this file
    (and create no stray file where a mangled name would point)."""
    directory = tmp_path / name
    directory.mkdir()
    db = directory / "tradesv3.sqlite"
    make_db(db, "wal")
    guard = make_guard(Config(db_url=sqlite_url_for(db)))
    assert guard.location.sqlite_path == db
    found = {f.check: f for f in diagnose(guard)}
    assert found["journal mode"].status == OK, found["journal mode"].message
    assert [p.name for p in tmp_path.iterdir() if not p.is_dir()] == []


def test_a_damaged_pack_index_is_a_warning_naming_it(make_guard, db_path, db_url, run_cli):
    make_db(db_path, "wal")
    make_guard(Config(db_url=db_url, storage="repository")).backup()
    healthy = run_cli("doctor", "--db", db_url)
    assert "damaged pack indexes" not in lines_by_check(healthy.stdout)
    (idx,) = db_path.parent.glob("*.dbguard/backups/repository/packs/*/*.idx")
    idx.write_bytes(b"DBGIDX1\n" + b"\x00" * 48)  # a torn entry
    result = run_cli("doctor", "--db", db_url)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    found = lines_by_check(result.stdout)["damaged pack indexes"]
    assert found.startswith("WARN 1 pack index(es) in "), found
    assert f"{idx}: pack index is damaged" in found
    assert "move each index and its .pack out of the repository" in found
