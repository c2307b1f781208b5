"""Backup-then-restore, over and over, while a writer process commits numbered rows.

The writer (a real child process, its own SQLite connection held open throughout) inserts
row ``max(n) + 1`` as fast as it can, so the table always holds exactly rows 1..max. Each
cycle reads how many rows are committed, takes a hot backup while the writer runs, checks
the backup holds every one of those rows and no gap, restores it in place (the writer
paused between two of its transactions, its connection still open), and checks the live
database then equals the backup and passes ``integrity_check``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from harness import WRITER, Tally, check_database, committed, create_numbered
from sqlite_files import content_digest

from dbguard_plugin import Guard
from dbguard_plugin.engines.sqlite.backup import sqlite_uri
from dbguard_plugin.engines.sqlite.stored import opened_backup
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config


def _held(path: Path, upto: int) -> tuple[int, int, int]:
    """(rows 1..upto present, row count, highest n) in a backup file, opened read-only."""
    conn = sqlite3.connect(sqlite_uri(path, "ro"), uri=True)
    try:
        (present,) = conn.execute("SELECT count(*) FROM numbered WHERE n <= ?",
                                  (upto,)).fetchone()
        count, top = conn.execute("SELECT count(*), coalesce(max(n), 0) FROM numbered").fetchone()
        return int(present), int(count), int(top)
    finally:
        conn.close()


@pytest.fixture(params=["files", "repository"])
def quick_guard(db_url: str, request: pytest.FixtureRequest) -> Guard:
    # A short catalog: the loop makes two backups per cycle (its own and the safety one),
    # so with the repository every cycle also collects what prune drops.
    return Guard(Config(db_url=db_url, keep_last=4, keep_daily=0, keep_weekly=0,
                        restore_check="quick_check", storage=request.param))


def test_backup_then_restore_cycles_lose_nothing(
    db_path: Path, spawn, quick_guard: Guard, cycles: int, tally: Tally
) -> None:
    create_numbered(db_path)
    writer = spawn(WRITER, str(db_path))
    guard = quick_guard
    try:
        for cycle in range(cycles):
            before = committed(db_path)
            manifest = guard.backup()  # hot: the writer commits all along
            with opened_backup(guard.catalog, manifest) as stored:
                present, count, top = _held(stored, before)
                held = content_digest(stored)
            tally.rows_lost += before - present
            assert present == before, f"cycle {cycle}: rows committed before it are missing"
            assert count == top >= before, f"cycle {cycle}: a gap in the backup"

            writer.send("PAUSE")
            writer.expect("PAUSED")
            restore(guard, manifest.id)
            check_database(tally, db_path)
            assert content_digest(db_path) == held, f"cycle {cycle}"
            writer.send("GO")
            tally.cycles += 1
        writer.send("STOP")
        wrote = writer.expect("WROTE").split()
        assert wrote[2] == "0", [line for line in writer.output if line.startswith("ERROR")]
        assert int(wrote[1]) > cycles, "the writer hardly wrote: the loop proved nothing"
        assert writer.wait() == 0, writer.stderr
    finally:
        guard.close()


def test_restore_succeeds_while_a_writer_without_orders_commits(
    db_path: Path, spawn, quick_guard: Guard, tally: Tally
) -> None:
    create_numbered(db_path)
    writer = spawn(WRITER, str(db_path))
    guard = quick_guard
    try:
        for _ in range(20):  # about half fail on this machine: 20 in a row never pass
            manifest = guard.backup()
            restore(guard, manifest.id)
            check_database(tally, db_path)
    finally:
        writer.send("STOP")
        writer.expect("WROTE")
        guard.close()
