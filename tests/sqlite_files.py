"""SQLite files for tests: the small database most restore tests start from, and the
readers that say what a database file holds.

A support module, not a conftest, so that test modules and the torture suite can import
these by name (pytest imports every directory's conftest.py as a module named
"conftest"); the helpers are used inside assertions and inside other helpers, where a
fixture would have to be handed down.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

#: What :func:`make_db` writes (the backup), and what :func:`change_live` leaves.
BACKUP_ROWS = [(i, f"backup-{i}") for i in range(1, 6)]
LIVE_ROWS = [(i, f"live-{i}") for i in range(1, 4)]


def make_db(path: Path, rows: int = 5, bulk: int = 0) -> None:
    """Table t with *rows* rows ("backup-<id>"), optionally *bulk* rows of 4 KB, WAL mode."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)",
                     [(i, f"backup-{i}") for i in range(1, rows + 1)])
    if bulk:
        conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        conn.executemany("INSERT INTO bulk (b) VALUES (randomblob(4000))", [()] * bulk)
    conn.commit()
    conn.close()


def change_live(path: Path) -> None:
    """After the backup: the live database moves on (3 rows, other values)."""
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM t WHERE id > 3")
    conn.execute("UPDATE t SET v = 'live-' || id")
    conn.commit()
    conn.close()


def rows(path: Path, table: str = "t") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def file_sha(path: Path) -> str:
    """sha256 of the database file after a checkpoint, with no connection left open."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def content_digest(path: Path) -> str:
    """sha256 over every table's rows, tables in name order, rows in rowid order."""
    assert path.is_file(), f"{path} does not exist"
    conn = sqlite3.connect(path)
    try:
        digest = hashlib.sha256()
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        for table in tables:
            digest.update(f"\x00table {table}\x00".encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def page_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
