"""``dbguard backup`` and ``dbguard backups`` through real processes: what they print, the
JSON shapes, notes, no progress bar unless stderr is a terminal, and no password ever."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

SECRET_URL = "postgresql://u:s3cret@127.0.0.1/x"

#: Holds an EXCLUSIVE lock on a rollback-journal database, so a backup must wait for it.
#: Prints READY with the lock held; commits on the first stdin line (prints RELEASED).
LOCK_HOLDER = """
    import sqlite3, sys

    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("READY", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    print("RELEASED", flush=True)
    sys.stdin.readline()
"""


def make_db(path: Path, journal_mode: str = "wal", rows: int = 25) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, trade_id INTEGER)")
    conn.executemany("INSERT INTO trades (pair) VALUES (?)", [("BTC/USDT",)] * rows)
    conn.close()


def catalog_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".dbguard") / "backups"


def test_backup_prints_id_path_and_sha256(db_path, db_url, run_cli):
    make_db(db_path)
    result = run_cli("backup", "--db", db_url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # piped: no progress bar, no log noise
    first, path_line, sha_line = result.stdout.splitlines()
    match = re.fullmatch(r"backup (\S+) verified: [\d.]+ KiB, 25 rows in 2 tables, "
                         r"[\d.]+ s", first)
    assert match, first
    backup_id = match.group(1)
    path = Path(path_line.strip())
    assert path == catalog_of(db_path) / f"{backup_id}.sqlite"
    assert sha_line.strip() == f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}"
    manifest = json.loads((path.parent / f"{backup_id}.json").read_text())
    assert manifest["sha256"] == sha_line.split()[1]
    assert manifest["reason"] == "manual"
    assert manifest["note"] == ""


def test_backup_json_and_the_listing(db_path, db_url, run_cli):
    make_db(db_path)
    made = run_cli("backup", "--db", db_url, "--json")
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    body = json.loads(made.stdout)
    assert {"id", "sha256", "path", "reason", "size", "tables", "created"} <= set(body)
    path = Path(body["path"])
    assert path.is_file()
    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert body["tables"] == {"trades": 25, "orders": 0}

    noted = run_cli("backup", "--reason", "before upgrade", "--db", db_url, "--json")
    assert noted.returncode == 0, noted.stderr
    note_body = json.loads(noted.stdout)
    assert (note_body["reason"], note_body["note"]) == ("manual", "before upgrade")

    listed = run_cli("backups", "--json", "--db", db_url)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [body["id"], note_body["id"]]
    for row, made_body in zip(rows, (body, note_body), strict=True):
        assert {"id", "time", "reason", "size", "sha256", "verified", "path"} <= set(row)
        assert row["time"] == made_body["created"]
        assert row["reason"] == "manual"
        assert row["size"] == made_body["size"] == Path(row["path"]).stat().st_size
        assert row["sha256"] == made_body["sha256"]
        assert row["verified"] is True
        assert row["path"] == made_body["path"]
    assert rows[1]["note"] == "before upgrade"

    human = run_cli("backups", "--db", db_url)
    assert human.returncode == 0
    lines = human.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "TIME", "(UTC)", "REASON"]
    assert lines[1].startswith(body["id"])
    assert body["sha256"][:12] in lines[1]
    assert lines[-1] == f"2 backups in {catalog_of(db_path)}"


def test_the_listing_shows_the_note_under_its_backup(db_path, db_url, run_cli):
    make_db(db_path)
    plain = json.loads(run_cli("backup", "--db", db_url, "--json").stdout)
    noted = run_cli("backup", "--reason", "before editing pairlocks by hand", "--db", db_url,
                    "--json")
    assert noted.returncode == 0, noted.stderr
    note_id = json.loads(noted.stdout)["id"]
    human = run_cli("backups", "--db", db_url)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == [plain["id"], note_id]
    assert lines[3] == "  note: before editing pairlocks by hand"  # under its own row
    assert lines[4] == f"2 backups in {catalog_of(db_path)}"  # no note line for the other


def test_a_note_never_reaches_the_terminal_raw(db_path, db_url, run_cli):
    """A note is free text: a line break or an escape sequence in it is listed escaped,
    on the note's one line (a terminal would obey the sequence; click strips it only
    where the output is not a terminal, as here)."""
    make_db(db_path)
    noted = run_cli("backup", "--reason", "first\nsecond \x1b[2J", "--db", db_url)
    assert noted.returncode == 0, noted.stderr
    human = run_cli("backups", "--db", db_url)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[2] == "  note: first\\nsecond \\x1b[2J"
    assert lines[3].startswith("1 backups in ")


def test_verifying_an_unknown_backup_fails_verification(db_path, db_url, run_cli):
    make_db(db_path)
    assert run_cli("backup", "--db", db_url).returncode == 0
    human = run_cli("verify", "20261129T000000000Z-manual", "--db", db_url)
    assert human.returncode == 4, human.stdout + human.stderr
    assert human.stderr.startswith(
        "dbguard: verification failed: no such backup: no backup "
        "'20261129T000000000Z-manual' in ")
    as_json = run_cli("verify", "20261129T000000000Z-manual", "--db", db_url, "--json")
    assert as_json.returncode == 4
    assert json.loads(as_json.stdout)["exit_code"] == 4


def test_a_known_reason_is_kept_as_the_reason(db_path, db_url, run_cli):
    make_db(db_path)
    result = run_cli("backup", "--reason", "pre-restore", "--db", db_url, "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["reason"], body["note"]) == ("pre-restore", "")
    assert body["id"].endswith("-pre-restore")


def _wait_for_tmp_copy(catalog: Path, proc: subprocess.Popen) -> None:
    """Until the backup created its .tmp- copy (then it waits for the database lock)."""
    deadline = time.monotonic() + 60
    while not (catalog.is_dir() and any(n.startswith(".tmp-") for n in os.listdir(catalog))):
        assert proc.poll() is None, "the backup ended before it started copying"
        assert time.monotonic() < deadline, "the backup never started copying"
        time.sleep(0.01)


@pytest.mark.parametrize("stderr_kind", ["pipe", "terminal"])
def test_progress_bar_only_on_a_terminal(stderr_kind, db_path, db_url, spawn, run_cli,
                                         read_terminal):
    """A backup that takes more than a second shows a bar on a terminal, nothing on a pipe.

    The copy is held back by another process's EXCLUSIVE lock until the backup has been
    running for over a second (the bar's delay), then released: no timing race decides
    the outcome, only whether stderr is a terminal.
    """
    make_db(db_path, journal_mode="delete")
    holder = spawn(LOCK_HOLDER, str(db_path))
    if stderr_kind == "terminal":
        master, slave = os.openpty()
        err_target: int = slave
    else:
        err_target = subprocess.PIPE
    proc = run_cli.start("backup", "--db", db_url, stderr=err_target)
    try:
        if stderr_kind == "terminal":
            os.close(slave)
        _wait_for_tmp_copy(catalog_of(db_path), proc)
        # The bar's clock started before the .tmp- copy was created: wait past its delay.
        time.sleep(1.2)
        holder.send()
        holder.expect("RELEASED")
        if stderr_kind == "terminal":
            stdout, _ = proc.communicate(timeout=60)
            err = read_terminal(master)
        else:
            stdout, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if stderr_kind == "terminal":
            os.close(master)
    assert proc.returncode == 0, err
    assert stdout.startswith("backup ")
    if stderr_kind == "terminal":
        assert "backing up" in err
    else:
        assert err == ""


def test_json_output_has_no_progress_bar_even_on_a_terminal(db_path, db_url, run_cli,
                                                            read_terminal):
    make_db(db_path)
    master, slave = os.openpty()
    try:
        proc = run_cli("backup", "--json", "--db", db_url, stderr=slave)
        os.close(slave)
        slave = -1
        err = read_terminal(master)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0, err
    assert json.loads(proc.stdout)["reason"] == "manual"
    assert "backing up" not in err


def test_server_database_backup_fails_cleanly_without_the_password(run_cli):
    human = run_cli("backup", "--db", SECRET_URL)
    assert human.returncode == 1
    assert "s3cret" not in human.stdout + human.stderr
    assert "postgresql://u:***@127.0.0.1/x" in human.stderr
    assert "dump tool" in human.stderr
    assert "Traceback" not in human.stderr

    as_json = run_cli("backup", "--json", "--db", SECRET_URL)
    assert as_json.returncode == 1
    assert "s3cret" not in as_json.stdout + as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["exit_code"] == 1
    assert "postgresql://u:***@127.0.0.1/x" in body["error"]


def test_missing_database_file_is_reported(run_cli, tmp_path):
    missing = tmp_path / "typo.sqlite"
    result = run_cli("backup", "--db", f"sqlite:///{missing}")
    assert result.returncode == 1
    assert f"{missing}: no database file to back up" in result.stderr
    assert not missing.exists()


def test_backup_dir_under_a_file_is_reported_without_a_traceback(db_path, db_url, tmp_path,
                                                                run_cli):
    make_db(db_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {"db_url": db_url,
                                                   "backup_dir": str(blocker / "b")}}))
    result = run_cli("backup", "--config", str(config_file))
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dbguard: ")
    assert str(blocker) in result.stderr
