"""The catalog: ids typed by users never name a path, symlinks are never followed, what
interrupted backups leave is cleaned up, and one bad manifest never breaks the listing."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog, validate_id
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.engines.sqlite.backup import create_backup
from dbguard_plugin.errors import ConfigError, UnsafePathError
from dbguard_plugin.files import private_dir
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config


def make_db(path: Path, rows: int = 100) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, amount REAL)")
    conn.executemany("INSERT INTO trades (amount) VALUES (?)", [(i,) for i in range(rows)])
    conn.close()


@pytest.fixture
def catalog_with_backup(make_guard, db_path):
    """A WAL database with one verified backup: (guard, manifest)."""
    make_db(db_path)
    guard = make_guard()
    return guard, guard.backup()


# -- ids from users ----------------------------------------------------------------------------

BAD_IDS = {
    "traversal": "../../etc/passwd",
    "separator": "a/b",
    "dot-dot": "..",
    "dot": ".",
    "hidden": ".catalog.lock",
    "too long": "x" * 300,
    "control": "id\x01with\x1b[31mescape",
    "newline": "two\nlines",
    "backslash": "a\\b",
    "nul-free unicode": "b\u00e4ckup",
}


@pytest.mark.parametrize("backup_id", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_ids_from_users_are_validated(backup_id, run_cli, catalog_with_backup, db_url):
    result = run_cli("verify", backup_id, "--db", db_url, in_process=True)
    assert result.exit_code == 2, result.output
    assert "is not a backup id" in result.stderr
    assert "never a path" in result.stderr
    assert "\x1b" not in result.stderr  # control characters are shown escaped
    assert "\x01" not in result.stderr
    assert len(result.stderr) < 400  # a 300-character id is shown shortened
    assert result.stdout == ""
    with pytest.raises(UnsafePathError):
        validate_id(backup_id)


def test_empty_id_is_a_usage_error(run_cli, catalog_with_backup, db_url):
    result = run_cli("verify", "", "--db", db_url, in_process=True)
    assert result.exit_code == 2
    assert "give one backup ID or --all" in result.stderr


def test_path_traversal_through_a_real_process(run_cli, catalog_with_backup, db_url):
    guard, manifest = catalog_with_backup
    # A valid manifest where "../<name>" would find it, with its data beside it.
    outside = guard.catalog.directory.parent
    shutil.copy(guard.catalog.data_path(manifest), outside / manifest.file)
    planted = json.loads(guard.catalog.manifest_path(manifest.id).read_text())
    planted["id"] = "../planted"
    (outside / "planted.json").write_text(json.dumps(planted))

    result = run_cli("verify", "../planted", "--db", db_url)
    assert result.returncode == 2
    assert "'../planted' is not a backup id" in result.stderr
    assert "ok" not in result.stdout


def test_ids_dbguard_makes_are_valid_and_unique(tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    catalog.prepare()
    now = 1_750_000_000.123
    first = catalog.new_id("manual", now)
    assert first == "20250615T150640123Z-manual"
    assert validate_id(first) == first
    (catalog.directory / f"{first}.json").write_text("{}")
    assert catalog.new_id("manual", now) == f"{first}-2"
    (catalog.directory / f"{first}-2.sqlite.gz").write_bytes(b"")
    assert catalog.new_id("manual", now) == f"{first}-3"
    assert catalog.new_id("session-end", now) == "20250615T150640123Z-session-end"


# -- symlinks ----------------------------------------------------------------------------------


def test_a_symlinked_manifest_is_not_followed(catalog_with_backup, run_cli, db_url,
                                              tmp_path):
    guard, real = catalog_with_backup
    directory = guard.catalog.directory
    fake_id = "20990101T000000000Z-manual"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    body = json.loads(guard.catalog.manifest_path(real.id).read_text())
    body.update(id=fake_id, file=f"{fake_id}.sqlite")
    (elsewhere / "m.json").write_text(json.dumps(body))
    shutil.copy(guard.catalog.data_path(real), elsewhere / "data.sqlite")
    target = (elsewhere / "data.sqlite").read_bytes()
    os.symlink(elsewhere / "m.json", directory / f"{fake_id}.json")
    os.symlink(elsewhere / "data.sqlite", directory / f"{fake_id}.sqlite")
    # A link named like the data file of an interrupted backup (no manifest at all).
    orphan_link = directory / "20990101T000000001Z-manual.sqlite"
    os.symlink(elsewhere / "data.sqlite", orphan_link)

    listed = run_cli("backups", "--json", "--db", db_url)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows if "damaged" not in row] == [real.id]
    # listed as damaged (never used), not followed
    assert [(r["id"], "symlink" in r["damaged"]) for r in rows if "damaged" in r] == [
        (fake_id, True)]
    assert f"{fake_id}.json" in listed.stderr
    assert "symlink" in listed.stderr

    verified = run_cli("verify", fake_id, "--db", db_url, in_process=True)
    assert verified.exit_code == 2
    assert "is a symlink" in verified.stderr
    assert str(directory / f"{fake_id}.json") in verified.stderr

    # The next backup cleans the catalog: the orphan link goes, what it pointed to stays.
    assert run_cli("backup", "--db", db_url, in_process=True).exit_code == 0
    assert not os.path.lexists(orphan_link)
    assert (elsewhere / "data.sqlite").read_bytes() == target
    assert (elsewhere / "m.json").exists()


def test_a_symlinked_data_file_is_reported_not_followed(catalog_with_backup, run_cli, db_url,
                                                        tmp_path):
    """One backup whose data file was replaced by a link must not break the others."""
    guard, linked = catalog_with_backup
    intact = guard.backup()
    path = guard.catalog.data_path(linked)
    moved = tmp_path / "moved.sqlite"
    shutil.move(path, moved)
    os.symlink(moved, path)

    listed = run_cli("backups", "--json", "--db", db_url, in_process=True)
    assert listed.exit_code == 0, listed.output
    assert intact.id in [row["id"] for row in json.loads(listed.stdout)]

    verified = run_cli("verify", "--all", "--db", db_url, in_process=True)
    assert verified.exit_code == 4, verified.output
    assert f"ok   {intact.id}" in verified.stdout
    assert f"BAD  {linked.id}" in verified.stdout
    assert "symlink" in verified.stdout


# -- cleanup -----------------------------------------------------------------------------------


def test_cleanup_removes_leftovers_and_nothing_else(db_path, db_url, tmp_path):
    make_db(db_path)
    catalog = Catalog(tmp_path / "catalog")
    kept = create_backup(locate(db_url), catalog, "manual")
    dead_pid = _dead_pid()
    leftovers = [
        ".tmp-20250101T000000000Z-manual.sqlite",
        ".tmp-20250101T000000000Z-manual.sqlite.gz",
        ".tmp-20250101T000000000Z-manual.json.4242",
        f".tmp-read-{dead_pid}-20250101T000000000Z-manual.sqlite.zst.sqlite",
        "20250101T000000000Z-manual.sqlite",
        "20250101T000000001Z-scheduled.sqlite.zst",
        "20250101T000000002Z-session-start-2.sqlite.gz",
    ]
    # Not leftovers: a scratch copy a live verify is reading, and files dbguard did not name.
    others = [
        f".tmp-read-{os.getpid()}-{kept.file}.sqlite",
        "README.txt",
        "copy-of-tradesv3.sqlite",
    ]
    for name in leftovers + others:
        (catalog.directory / name).write_bytes(b"partial")

    with catalog.locked():
        removed = catalog.cleanup()
    assert sorted(removed) == sorted(leftovers)
    names = set(os.listdir(catalog.directory))
    assert {kept.file, f"{kept.id}.json", *others} <= names
    assert not names & set(leftovers)
    assert verify_backup(catalog, kept).ok
    with catalog.locked():
        assert catalog.cleanup() == []


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cleanup_never_touches_the_live_database(db_path, db_url, tmp_path, run_cli):
    """backup_dir set to the database's own directory: the catalog's cleanup must not
    take the database (or its -wal) for a leftover of an interrupted backup."""
    make_db(db_path, rows=321)
    holder = sqlite3.connect(db_path, isolation_level=None)  # the bot: keeps a -wal
    holder.execute("INSERT INTO trades (amount) VALUES (1)")
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {"db_url": db_url,
                                                   "backup_dir": str(db_path.parent)}}))
    try:
        result = run_cli("backup", "--config", str(config_file))
        assert db_path.exists(), f"dbguard deleted the live database: {result.stdout}"
        assert holder.execute("SELECT count(*) FROM trades").fetchone()[0] == 322
    finally:
        holder.close()
    check = sqlite3.connect(db_path)
    try:
        assert check.execute("SELECT count(*) FROM trades").fetchone()[0] == 322
    finally:
        check.close()
    # Either the backup was made, or backup_dir was refused with a clear message.
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        assert "backup_dir" in result.stderr


# -- listing -----------------------------------------------------------------------------------


def test_listing_skips_corrupt_manifests(catalog_with_backup, run_cli, db_url):
    guard, good = catalog_with_backup
    directory = guard.catalog.directory
    body = json.loads(guard.catalog.manifest_path(good.id).read_text())
    bad = {
        "20250101T000000000Z-manual.json": "{not json",
        "20250101T000000001Z-manual.json": "[1, 2, 3]",
        "20250101T000000002Z-manual.json": json.dumps({"id": "20250101T000000002Z-manual"}),
        "20250101T000000003Z-manual.json": json.dumps(body),  # names another backup
        "20250101T000000004Z-manual.json": json.dumps(
            {**body, "id": "20250101T000000004Z-manual", "sha256": "short"}),
        "20250101T000000005Z-manual.json": "\xff\xfe binary",
    }
    for name, text in bad.items():
        (directory / name).write_text(text, encoding="latin-1")

    result = run_cli("backups", "--json", "--db", db_url)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows if "damaged" not in row] == [good.id]
    # each corrupt one is a damaged row (id from its file name, why), never a backup
    assert sorted(f"{r['id']}.json" for r in rows if "damaged" in r) == sorted(bad)
    for name in bad:
        assert f"skipping {name}" in result.stderr
    assert "Traceback" not in result.stderr


def test_listing_survives_a_manifest_naming_a_file_outside_the_catalog(
    catalog_with_backup, run_cli, db_url
):
    guard, good = catalog_with_backup
    evil_id = "20250101T000000000Z-manual"
    body = json.loads(guard.catalog.manifest_path(good.id).read_text())
    body.update(id=evil_id, file="../../../../etc/passwd", created_ts=time.time() - 60)
    guard.catalog.manifest_path(evil_id).write_text(json.dumps(body))

    listed = run_cli("backups", "--json", "--db", db_url, in_process=True)
    assert listed.exit_code == 0, listed.output
    assert good.id in [row["id"] for row in json.loads(listed.stdout)]
    assert "/etc/passwd" not in listed.stdout

    verified = run_cli("verify", "--all", "--db", db_url, in_process=True)
    assert verified.exit_code in (0, 4), verified.output  # skipped or reported, not a crash
    assert f"ok   {good.id}" in verified.stdout


def test_prune_never_deletes_outside_the_catalog(catalog_with_backup, run_cli, db_url, tmp_path):
    guard, good = catalog_with_backup
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"precious")
    evil_id = "20250101T000000000Z-manual"
    body = json.loads(guard.catalog.manifest_path(good.id).read_text())
    body.update(id=evil_id, file="../../victim.sqlite", created_ts=time.time() - 60)
    guard.catalog.manifest_path(evil_id).write_text(json.dumps(body))
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "keep_last": 1, "keep_daily": 0, "keep_weekly": 0}}))

    run_cli("prune", "--config", str(config_file), in_process=True)
    assert victim.read_bytes() == b"precious"
    assert guard.catalog.data_path(good).is_file()


def test_listing_an_empty_or_missing_catalog(run_cli, db_path, db_url):
    make_db(db_path)
    result = run_cli("backups", "--db", db_url, in_process=True)
    assert result.exit_code == 0
    assert "no backups in" in result.stdout
    assert "'dbguard backup' makes one" in result.stdout
    as_json = run_cli("backups", "--json", "--db", db_url, in_process=True)
    assert json.loads(as_json.stdout) == []


def test_catalog_lock_serialises_writers(tmp_path, spawn):
    """A second process waits for the catalog lock, and gets it once the first lets go."""
    directory = tmp_path / "catalog"
    holder = spawn(
        """
        import sys
        from pathlib import Path
        from dbguard_plugin.catalog import Catalog

        with Catalog(Path(sys.argv[1])).locked():
            print("READY", flush=True)
            sys.stdin.readline()
        print("RELEASED", flush=True)
        sys.stdin.readline()
        """,
        str(directory),
    )
    from dbguard_plugin.errors import DbGuardError

    with pytest.raises(DbGuardError, match="another dbguard process has held the catalog"), \
            Catalog(directory).locked(timeout=0.05):
        pass
    holder.send()
    holder.expect("RELEASED")
    with Catalog(directory).locked(timeout=5):
        pass


def test_guard_uses_backup_dir_from_the_config(make_guard, db_path, db_url, tmp_path):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, backup_dir=str(tmp_path / "elsewhere" / "b")))
    manifest = guard.backup()
    assert guard.catalog.directory == tmp_path / "elsewhere" / "b"
    assert (tmp_path / "elsewhere" / "b" / manifest.file).is_file()
    assert not (db_path.with_name(db_path.name + ".dbguard") / "backups").exists()


def test_two_databases_never_share_a_catalog(make_guard, tmp_path):
    """Retention in one database's catalog would otherwise delete the other's backups."""
    shared = tmp_path / "shared-backups"
    first_db, second_db = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    make_db(first_db)
    make_db(second_db)
    first = make_guard(Config(db_url=f"sqlite:///{first_db}", backup_dir=str(shared)))
    second = make_guard(Config(db_url=f"sqlite:///{second_db}", backup_dir=str(shared)))
    kept = first.backup()
    with pytest.raises(ConfigError, match="give each database its own backup_dir"):
        second.backup()
    assert [m.id for m in first.catalog.manifests()] == [kept.id]
    assert kept.source == f"sqlite:///{first_db}"



def test_two_creators_of_the_state_directories_at_once_both_succeed(tmp_path: Path) -> None:
    """A bot and a prune starting together: one makes <db>.dbguard while the other
    makes <db>.dbguard/backups, whose mkdir fails (no parent yet) and then finds the
    parent made. Both succeed. Two threads stand in for the two processes: mkdir
    releases the GIL, so they race the same way."""
    failures: list[str] = []

    def make(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            private_dir(path)
        except OSError as exc:
            failures.append(repr(exc))

    for round_ in range(300):
        state = tmp_path / str(round_) / "tradesv3.sqlite.dbguard"
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=make, args=(p, barrier))
                   for p in (state, state / "backups")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    made = tmp_path / "0" / "tradesv3.sqlite.dbguard" / "backups"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
