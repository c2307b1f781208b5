"""Backups: one consistent snapshot under a live writer, a complete manifest, private
files, a standalone rollback-journal copy, compression, and ``verify`` catching damage.

Every database is a real SQLite file in tmp_path; the writer is a separate process that
reports its progress through its stdout (asked through its stdin), so the test knows for
certain which rows were committed before a backup started.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import re
import sqlite3
import stat
import time
from pathlib import Path

import pytest
import zstandard
from sqlite_urls import sqlite_url_for

from dbguard_plugin import __version__
from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.engines.sqlite.backup import BackupSettings, create_backup
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config

SQLITE_MAGIC = b"SQLite format 3\x00"

#: Commits INSERT INTO n VALUES (i), i = 1, 2, 3, ..., one transaction per row, one row
#: about every 5 ms. "Q" on stdin -> "AT <last committed i>"; "STOP" -> "LOCKED <count of
#: 'database is locked' errors> LAST <i>" and exit 0. A locked error is counted and the
#: same row retried: the writer never dies of one. argv: database path
WRITER = r"""
    import os, select, sqlite3, sys

    conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    locked = 0
    last = 0
    pending = b""
    print("READY", flush=True)
    while True:
        readable, _, _ = select.select([0], [], [], 0.005)
        if readable:
            data = os.read(0, 4096)
            if not data:
                sys.exit(1)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line == b"Q":
                    print(f"AT {last}", flush=True)
                elif line == b"STOP":
                    conn.close()
                    print(f"LOCKED {locked} LAST {last}", flush=True)
                    sys.exit(0)
        while True:
            try:
                conn.execute("INSERT INTO n VALUES (?)", (last + 1,))
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                locked += 1
        last += 1
"""


def make_db(
    path: Path, *, journal_mode: str = "wal", rows: int = 0, bulk_mib: int = 0,
    page_size: int = 4096, user_version: int = 0,
) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size={page_size}")
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute(f"PRAGMA user_version={user_version}")
        conn.execute("CREATE TABLE n (i INTEGER NOT NULL)")
        conn.execute("CREATE TABLE bulk (b BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO n VALUES (?)", [(i,) for i in range(1, rows + 1)])
        for _ in range(bulk_mib * 16):
            conn.execute("INSERT INTO bulk VALUES (randomblob(65536))")
        conn.execute("COMMIT")
    finally:
        conn.close()


def open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)


def integrity(path: Path) -> list[str]:
    conn = open_ro(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def prefix_rows(path: Path) -> int:
    """k when table n holds exactly the rows 1..k; fails otherwise."""
    conn = open_ro(path)
    try:
        count, low, high = conn.execute("SELECT count(*), min(i), max(i) FROM n").fetchone()
    finally:
        conn.close()
    if count == 0:
        return 0
    assert (low, high) == (1, count), f"{path}: rows are not 1..{count}: min {low} max {high}"
    return int(count)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- consistency under a live writer -------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backups_under_a_live_writer_hold_every_committed_row(
    journal_mode, db_path, db_url, tmp_path, spawn
):
    make_db(db_path, journal_mode=journal_mode, bulk_mib=4)
    writer = spawn(WRITER, str(db_path))
    catalog = Catalog(tmp_path / "catalog")
    location = locate(db_url)
    settings = BackupSettings(step_pages=64)

    def committed() -> int:
        writer.send("Q")
        return int(writer.expect("AT ").split()[1])

    taken = []
    for _ in range(20):
        before = committed()
        steps: list[tuple[int, int]] = []
        during: list[int] = []

        def progress(done: int, total: int, steps=steps, during=during) -> None:
            steps.append((done, total))
            # A copy that restarts on every write never finishes under a live writer.
            assert len(steps) < 2000, "the copy keeps restarting under the writer"
            if journal_mode == "wal" and not during:
                # Hold the copy after its first step until the writer committed 3 more
                # rows: a WAL reader never blocks the writer, and the snapshot must not
                # move (the copy neither restarts nor picks up these rows).
                start = now = committed()
                for _ in range(10_000):
                    now = committed()
                    if now >= start + 3:
                        break
                assert now >= start + 3, "the writer was blocked by a WAL backup"
                during.append(now)

        manifest = create_backup(location, catalog, "manual", settings=settings,
                                 progress=progress)
        stored = catalog.data_path(manifest)
        assert integrity(stored) == ["ok"]
        k = prefix_rows(stored)
        assert k >= before, f"backup {manifest.id} lost rows {k + 1}..{before}"
        assert manifest.tables["n"] == k
        assert manifest.tables["bulk"] == 64
        assert len(steps) >= 10, f"the copy took only {len(steps)} steps"
        assert steps[-1][0] == steps[-1][1]
        if during:
            assert k < during[0], "rows committed during the copy leaked into the snapshot"
        taken.append((before, k))
        catalog.delete(manifest)  # keep tmp_path small; the catalog is not under test here

    writer.send("STOP")
    locked, last = (int(x) for x in writer.expect("LOCKED").split()[1::2])
    assert writer.wait() == 0, writer.stderr
    assert last > taken[-1][1], "the writer stopped committing during the backups"
    assert prefix_rows(db_path) == last
    assert integrity(db_path) == ["ok"]
    if journal_mode == "wal":
        assert locked == 0, f"a WAL backup made the writer see {locked} 'locked' errors"
    else:
        # A rollback-journal backup blocks the writer for the copy; the busy timeout
        # absorbs that. Report what the writer saw; it retried and never died.
        print(f"rollback-journal mode: the writer saw {locked} 'database is locked' errors")


# -- the manifest ----------------------------------------------------------------------------


def test_manifest_describes_the_backup_and_the_trading_state(
    make_guard, db_path, db_url, spawn, scripts
):
    make_db(db_path, journal_mode="wal", rows=5, page_size=8192, user_version=7)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE TABLE fills (id TEXT PRIMARY KEY, qty REAL)")
    conn.executemany("INSERT INTO fills VALUES (?, ?)", [("f1", 1.0), ("f2", 2.5), ("f3", 3)])
    conn.close()
    bot = spawn(scripts["bot_with_orders"], db_url)
    guard = make_guard(Config(db_url=db_url, backup_on_session_start=False))
    guard.start_session("S-manifest")
    assert guard.admit_order()
    guard.order_event("A-1", "submitted", symbol="BTC/USDT", side="buy")

    t0 = time.time()
    manifest = guard.backup()
    t1 = time.time()
    path = guard.catalog.data_path(manifest)

    assert re.fullmatch(r"\d{8}T\d{9}Z-manual", manifest.id)
    assert manifest.file == f"{manifest.id}.sqlite"
    assert path.name == manifest.file
    assert path.parent == db_path.with_name(db_path.name + ".dbguard") / "backups"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", manifest.created)
    created = datetime.datetime.strptime(manifest.created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    assert abs(created.timestamp() - manifest.created_ts) < 0.002
    assert t0 <= manifest.created_ts <= t1
    assert manifest.reason == "manual"
    assert manifest.size == path.stat().st_size
    assert manifest.sha256 == sha256(path)
    assert (manifest.compression, manifest.raw_size, manifest.raw_sha256) == (
        "none", manifest.size, manifest.sha256)
    assert manifest.backend == "sqlite"
    assert manifest.source == db_url
    assert manifest.page_size == 8192
    assert manifest.page_count * 8192 == manifest.size
    assert manifest.journal_mode == "wal"  # of the source; the copy itself is not WAL
    assert manifest.user_version == 7
    assert re.fullmatch(r"[0-9a-f]{64}", manifest.schema_fingerprint)
    backup = open_ro(path)
    try:
        counts = {name: backup.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                  for (name,) in backup.execute(
                      "SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        backup.close()
    assert manifest.tables == counts == {"n": 5, "bulk": 0, "fills": 3}
    assert manifest.sqlite_version == sqlite3.sqlite_version
    assert manifest.dbguard_version == __version__
    assert manifest.trading_state["session_id"] == "S-manifest"
    assert manifest.trading_state["orders_in_flight"] == ["A-1"]
    (other,) = manifest.trading_state["other_processes"]
    assert other["pid"] == bot.pid
    assert other["orders_in_flight"] == ["A-1001", "B-2002"]
    assert isinstance(manifest.duration_s, float)
    assert 0 <= manifest.duration_s <= t1 - t0 + 0.01  # rounded to ms, monotonic clock
    assert manifest.verified is True
    on_disk = json.loads(guard.catalog.manifest_path(manifest.id).read_text())
    assert on_disk == json.loads(json.dumps(manifest.as_dict()))

    # The fingerprint follows the schema, not the data.
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("INSERT INTO n VALUES (6)")
    conn.close()
    same_schema = guard.backup()
    assert same_schema.schema_fingerprint == manifest.schema_fingerprint
    assert same_schema.tables["n"] == 6
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE INDEX fills_qty ON fills (qty)")
    conn.close()
    assert guard.backup().schema_fingerprint != manifest.schema_fingerprint


def test_backup_reason_must_be_known(db_path, db_url, tmp_path):
    make_db(db_path)
    with pytest.raises(ConfigError, match="backup reason 'whenever'"):
        create_backup(locate(db_url), Catalog(tmp_path / "c"), "whenever")


# -- files on disk ---------------------------------------------------------------------------


@pytest.fixture
def open_umask():
    """Run with umask 0, so a file dbguard forgets to create private shows up as 0666."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_backup_files_are_private(open_umask, db_path, db_url, state_dir, run_cli):
    make_db(db_path, rows=3)
    result = run_cli("backup", "--db", db_url)
    assert result.returncode == 0, result.stderr
    catalog = state_dir / "backups"
    for directory in (state_dir, catalog):
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700, directory
    names = sorted(os.listdir(catalog))
    (backup_id,) = (n[: -len(".json")] for n in names if not n.startswith(".")
                    and n.endswith(".json"))
    assert {".catalog.lock", f"{backup_id}.sqlite", f"{backup_id}.json"} <= set(names)
    for name in names:
        info = os.lstat(catalog / name)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600, f"{name} is {oct(info.st_mode)}"


def test_backup_of_a_wal_database_is_one_standalone_rollback_journal_file(
    make_guard, db_path
):
    make_db(db_path, journal_mode="wal", rows=10)
    writer = sqlite3.connect(db_path, isolation_level=None)  # keeps the -wal alive
    try:
        writer.execute("INSERT INTO n VALUES (11)")
        assert db_path.with_name(db_path.name + "-wal").exists()
        manifest = make_guard().backup()
    finally:
        writer.close()
    catalog = db_path.with_name(db_path.name + ".dbguard") / "backups"
    path = catalog / manifest.file
    header = path.read_bytes()[:100]
    assert header[:16] == SQLITE_MAGIC
    assert (header[18], header[19]) == (1, 1), "the copy still carries the WAL flag"
    assert manifest.journal_mode == "wal"
    conn = open_ro(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
    assert prefix_rows(path) == 11  # the rows still in the source's -wal are in the copy
    leftovers = [n for n in os.listdir(catalog) if n.endswith(("-wal", "-shm", "-journal"))]
    assert leftovers == []


@pytest.mark.parametrize(("method", "suffix", "magic"), [
    ("gzip", ".gz", b"\x1f\x8b"),
    ("zstd", ".zst", b"\x28\xb5\x2f\xfd"),
])
def test_compressed_backup_round_trip(method, suffix, magic, make_guard, db_path, db_url):
    make_db(db_path, rows=20_000)
    guard = make_guard(Config(db_url=db_url, compression=method))
    manifest = guard.backup()
    stored = guard.catalog.data_path(manifest)
    assert manifest.compression == method
    assert manifest.file == f"{manifest.id}.sqlite{suffix}"
    data = stored.read_bytes()
    assert data.startswith(magic)
    assert (manifest.size, manifest.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    if method == "gzip":
        raw = gzip.decompress(data)
    else:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert raw.startswith(SQLITE_MAGIC)
    assert (manifest.raw_size, manifest.raw_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert manifest.size < manifest.raw_size
    plain = db_path.with_name("plain.sqlite")
    plain.write_bytes(raw)
    assert integrity(plain) == ["ok"]
    assert prefix_rows(plain) == 20_000

    result = verify_backup(guard.catalog, manifest)
    assert result.ok, result.problems
    left = [n for n in os.listdir(guard.catalog.directory) if n.startswith(".tmp-")]
    assert left == []  # no scratch copy left behind


# -- verify: every kind of damage exits 4 and names the file ----------------------------------
# Exit 4 is checked through a real process; the variants run the same CLI in this process.


@pytest.fixture
def backups(make_guard, db_path, db_url):
    """Two verified backups of a small WAL database: (catalog, older, newer)."""
    make_db(db_path, rows=2000)
    guard = make_guard()
    return guard.catalog, guard.backup(), guard.backup()


def test_a_flipped_byte_fails_verify(backups, run_cli, db_url):
    catalog, intact, damaged = backups
    path = catalog.data_path(damaged)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    one = run_cli("verify", damaged.id, "--db", db_url)
    assert one.returncode == 4, one.stdout + one.stderr
    assert f"BAD  {damaged.id}" in one.stdout
    assert str(path) in one.stdout
    assert "does not match the manifest" in one.stdout

    every = run_cli("verify", "--all", "--db", db_url, in_process=True)
    assert every.returncode == 4
    assert f"ok   {intact.id}" in every.stdout
    assert str(path) in every.stdout
    assert "1 ok, 1 bad" in every.stdout

    good = run_cli("verify", intact.id, "--db", db_url, in_process=True)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines() == [f"ok   {intact.id}", "1 ok, 0 bad"]


def test_a_backup_that_fails_verify_no_longer_counts_as_verified(backups, run_cli, db_url):
    catalog, older, damaged = backups
    path = catalog.data_path(damaged)
    with open(path, "r+b") as fh:
        fh.seek(damaged.size // 2)
        fh.write(b"\xff" * 16)
    assert run_cli("verify", "--all", "--db", db_url, in_process=True).returncode == 4
    listed = {row["id"]: row["verified"] for row in json.loads(
        run_cli("backups", "--json", "--db", db_url, in_process=True).stdout)}
    assert listed == {older.id: True, damaged.id: False}
    assert catalog.newest_verified().id == older.id


def test_truncated_and_missing_backup_files_fail_verify(backups, run_cli, db_url):
    catalog, truncated, deleted = backups
    truncated_path = catalog.data_path(truncated)
    with open(truncated_path, "r+b") as fh:
        fh.truncate(truncated.size // 2)
    deleted_path = catalog.data_path(deleted)
    deleted_path.unlink()

    result = run_cli("verify", "--all", "--db", db_url, "--json", in_process=True)
    assert result.returncode == 4
    body = json.loads(result.stdout)
    assert body["ok"] is False
    problems = {r["id"]: r["problems"] for r in body["results"]}
    (short,) = problems[truncated.id]
    assert str(truncated_path) in short
    assert f"size {truncated.size // 2}" in short
    (gone,) = problems[deleted.id]
    assert gone == f"{deleted_path}: backup file is missing"

    single = run_cli("verify", deleted.id, "--db", db_url, in_process=True)
    assert single.returncode == 4
    assert "backup file is missing" in single.stdout


def test_tampered_or_unreadable_manifest_fails_verify(backups, run_cli, db_url):
    catalog, tampered, unreadable = backups
    manifest_file = catalog.manifest_path(tampered.id)
    data = json.loads(manifest_file.read_text())
    data["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(data))
    catalog.manifest_path(unreadable.id).write_text('{"id": ')

    result = run_cli("verify", tampered.id, "--db", db_url, in_process=True)
    assert result.returncode == 4
    assert str(catalog.data_path(tampered)) in result.stdout
    assert "does not match the manifest" in result.stdout

    broken = run_cli("verify", unreadable.id, "--db", db_url, in_process=True)
    assert broken.returncode == 4
    assert "manifest is unreadable" in broken.stderr
    assert str(catalog.manifest_path(unreadable.id)) in broken.stderr


def test_missing_manifest_means_no_such_backup(backups, run_cli, db_url):
    catalog, kept, orphaned = backups
    catalog.manifest_path(orphaned.id).unlink()
    result = run_cli("verify", orphaned.id, "--db", db_url, in_process=True)
    assert result.returncode == 4  # the documented code for "verification failed"
    assert f"no backup '{orphaned.id}'" in result.stderr
    every = run_cli("verify", "--all", "--db", db_url, in_process=True)
    assert every.returncode == 0
    assert every.stdout.splitlines() == [f"ok   {kept.id}", "1 ok, 0 bad"]


def damage_keeping_the_checksum(catalog: Catalog, manifest) -> Path:
    """Break every b-tree page but the first, and make the manifest agree with the bad
    bytes: a backup damaged before it was hashed. Returns the data file."""
    path = catalog.data_path(manifest)
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // manifest.page_size):
        data[page * manifest.page_size] = 0x00  # not a valid page type
    path.write_bytes(bytes(data))
    manifest_file = catalog.manifest_path(manifest.id)
    body = json.loads(manifest_file.read_text())
    body["sha256"] = body["raw_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest_file.write_text(json.dumps(body))
    return path


def test_damage_that_keeps_the_checksum_is_caught_by_sqlite(backups, run_cli, db_url):
    catalog, _, damaged = backups
    path = damage_keeping_the_checksum(catalog, damaged)
    result = run_cli("verify", damaged.id, "--db", db_url, in_process=True)
    assert result.returncode == 4, result.stdout + result.stderr
    assert str(path) in result.stdout
    assert "integrity_check" in result.stdout or "malformed" in result.stdout


@pytest.mark.parametrize("name", ["bot #2", "50%41off", "what?"])
def test_backup_and_verify_read_the_right_file_whatever_the_directory_is_called(
    name, make_guard, tmp_path
):
    """SQLite URIs give '#', '?' and '%' a meaning: a backup must still check its own
    copy (not an empty file a mangled name points at), and verify must read this one."""
    directory = tmp_path / name
    directory.mkdir()
    db = directory / "tradesv3.sqlite"
    make_db(db, rows=123)
    guard = make_guard(Config(db_url=sqlite_url_for(db)))
    assert guard.location.sqlite_path == db
    manifest = guard.backup()
    assert manifest.tables == {"n": 123, "bulk": 0}
    assert manifest.page_count * manifest.page_size == manifest.size
    assert verify_backup(guard.catalog, manifest).ok
    damage_keeping_the_checksum(guard.catalog, manifest)
    assert not verify_backup(guard.catalog, guard.catalog.get(manifest.id)).ok
    assert [p.name for p in tmp_path.iterdir() if not p.is_dir()] == []  # no stray file
