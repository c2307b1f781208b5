"""The file-level snapshot copy (snapshot.py) is consistent under writers and checkpoints.

A writer process commits transactions that each insert row k AND rewrite a ledger row
holding the running total and count, so a torn snapshot (pages from two points in time)
shows as a ledger that disagrees with the rows, not only as a missing row. A second
process runs checkpoints of every kind (PASSIVE, FULL, RESTART, TRUNCATE) in a loop, and
the writer's own autocheckpoint runs every 8 pages, so the database file is being
backfilled while the snapshot copies it: exactly the case the WAL overlay must get right.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines.sqlite.backup import BackupSettings, create_backup
from dbguard_plugin.location import locate

#: Each transaction: INSERT row k (with a 600-byte payload, so pages split and move) and
#: UPDATE the ledger to (count=k, total=k(k+1)/2). "Q" -> "AT <k>"; "STOP" -> exit 0.
WRITER = r"""
    import os, select, sqlite3, sys

    conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=8")
    last = 0
    pending = b""
    print("READY", flush=True)
    while True:
        readable, _, _ = select.select([0], [], [], 0.002)
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
                    sys.exit(0)
        k = last + 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO n VALUES (?, randomblob(600))", (k,))
        conn.execute("UPDATE ledger SET count = ?, total = total + ?", (k, k))
        if k % 7 == 0:
            conn.execute("DELETE FROM n WHERE i = ? AND 0", (k - 3,))  # touches the index
        conn.execute("COMMIT")
        last = k
"""

#: Checkpoints of every kind, as fast as they go, until stdin closes.
CHECKPOINTER = r"""
    import os, select, sqlite3, sys

    conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    print("READY", flush=True)
    modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
    n = 0
    while not select.select([0], [], [], 0.001)[0]:
        conn.execute(f"PRAGMA wal_checkpoint({modes[n % 4]})").fetchall()
        n += 1
    print(f"CHECKPOINTS {n}", flush=True)
"""


def make_db(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE n (i INTEGER PRIMARY KEY, pad BLOB)")
    conn.execute("CREATE INDEX n_pad ON n (pad)")
    conn.execute("CREATE TABLE ledger (count INTEGER NOT NULL, total INTEGER NOT NULL)")
    conn.execute("INSERT INTO ledger VALUES (0, 0)")
    conn.execute("CREATE TABLE bulk (b BLOB)")
    conn.execute("BEGIN")
    for _ in range(48):  # 3 MiB, so the copy takes several steps
        conn.execute("INSERT INTO bulk VALUES (randomblob(65536))")
    conn.execute("COMMIT")
    conn.close()


def consistent_rows(path: Path) -> int:
    """k when the copy passes integrity_check and holds rows 1..k and a matching ledger."""
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        count, low, high, total = conn.execute(
            "SELECT count(*), min(i), max(i), coalesce(sum(i), 0) FROM n"
        ).fetchone()
        ledger = conn.execute("SELECT count, total FROM ledger").fetchone()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
    assert ledger == (count, total), f"torn snapshot: ledger {ledger}, rows {count}/{total}"
    if count:
        assert (low, high) == (1, count), f"rows are not 1..{count}: {low}..{high}"
    return int(count)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_snapshot_copies_are_consistent_under_writes_and_checkpoints(
    journal_mode, db_path, db_url, tmp_path, spawn
):
    make_db(db_path, journal_mode)
    writer = spawn(WRITER, str(db_path))
    checkpointer = spawn(CHECKPOINTER, str(db_path)) if journal_mode == "wal" else None
    catalog = Catalog(tmp_path / "catalog")
    location = locate(db_url)
    settings = BackupSettings(step_pages=64)  # 256 KiB steps: many steps per copy

    def committed() -> int:
        writer.send("Q")
        return int(writer.expect("AT ").split()[1])

    previous = 0
    for _ in range(25):
        before = committed()
        manifest = create_backup(location, catalog, "manual", settings=settings)
        after = committed()
        assert manifest.copy_method == "snapshot"
        k = consistent_rows(catalog.data_path(manifest))
        assert before <= k <= after, f"snapshot holds {k} rows, committed {before}..{after}"
        assert manifest.tables["n"] == k
        assert k >= previous
        previous = k
        catalog.delete(manifest)
    assert committed() > previous, "the writer stopped while backups ran"
    if checkpointer is not None:
        checkpointer.send("")
        checkpointer.proc.stdin.close()
        assert int(checkpointer.expect("CHECKPOINTS").split()[1]) > 25
    writer.send("STOP")
    assert writer.wait() == 0, writer.stderr


def test_snapshot_and_backup_api_copies_hold_the_same_database(db_path, db_url, tmp_path):
    make_db(db_path, "wal")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # keep commits in the WAL for the overlay
    for k in range(1, 301):
        conn.execute("INSERT INTO n VALUES (?, randomblob(600))", (k,))
        conn.execute("UPDATE ledger SET count = ?, total = total + ?", (k, k))
    catalog = Catalog(tmp_path / "catalog")
    location = locate(db_url)
    fast = create_backup(location, catalog, "manual", settings=BackupSettings())
    slow = create_backup(location, catalog, "manual",
                         settings=BackupSettings(method="backup-api"))
    conn.close()
    assert (fast.copy_method, slow.copy_method) == ("snapshot", "backup-api")
    dumps = []
    for manifest in (fast, slow):
        copy = sqlite3.connect(catalog.data_path(manifest))
        dumps.append(list(copy.iterdump()))
        copy.close()
    assert dumps[0] == dumps[1]
    assert fast.tables == slow.tables == {"bulk": 48, "ledger": 1, "n": 300}
    assert fast.schema_fingerprint == slow.schema_fingerprint


def test_progress_reaches_the_total_when_the_last_pages_are_only_in_the_wal(
    db_path, db_url, tmp_path
):
    """The main file ends before the snapshot does (the newest pages are WAL frames that
    no checkpoint copied back yet): the copy is complete, and its progress must say so."""
    make_db(db_path, "wal")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    for k in range(1, 301):
        conn.execute("INSERT INTO n VALUES (?, randomblob(600))", (k,))
    steps: list[tuple[int, int]] = []
    manifest = create_backup(locate(db_url), Catalog(tmp_path / "catalog"), "manual",
                             settings=BackupSettings(step_pages=16),
                             progress=lambda done, total: steps.append((done, total)))
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    main_file = db_path.stat().st_size  # before the last connection closes and checkpoints
    conn.close()
    assert manifest.copy_method == "snapshot"
    total = steps[-1][1]
    assert main_file < total * page_size, "the main file must end early"
    assert steps[-1] == (total, total)
    assert [done for done, _ in steps] == sorted(done for done, _ in steps)


def test_without_the_copy_script_the_backup_api_takes_over(
    db_path, db_url, tmp_path, monkeypatch
):
    """A packaging without snapshot.py as a file (a zipapp, a frozen binary)."""
    from dbguard_plugin.engines.sqlite import snapshot

    make_db(db_path, "wal")
    monkeypatch.setattr(snapshot, "__file__", str(tmp_path / "not-there" / "snapshot.py"))
    manifest = create_backup(locate(db_url), Catalog(tmp_path / "catalog"), "manual")
    assert manifest.copy_method == "backup-api"
    assert manifest.tables == {"bulk": 48, "ledger": 1, "n": 0}
