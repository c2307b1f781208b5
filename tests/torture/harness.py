"""What the torture tests share besides fixtures: the tally and the database helpers.

Test modules import these by name (``from harness import ...``); the fixtures that hand
them out live in conftest.py. The readers shared with the rest of the suite
(integrity, content_digest, file_sha) are in tests/sqlite_files.py.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_files import integrity

#: The CI size of the backup-then-restore loop; the soak run passes ``--torture-cycles 1000``.
CI_CYCLES = 200


@dataclass
class Tally:
    cycles: int = 0
    crash_points: set[str] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    bad_inputs: set[str] = field(default_factory=set)
    interleavings: int = 0
    rows_lost: int = 0
    corrupt: int = 0

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("backup-then-restore cycles run", str(self.cycles)),
            ("crash points exercised (SIGKILL)", str(len(self.crash_points))),
            ("faults injected", str(len(self.faults))),
            ("bad inputs refused", str(len(self.bad_inputs))),
            ("bot/operator interleaving steps checked", str(self.interleavings)),
            ("rows lost", str(self.rows_lost)),
            ("corrupt databases", str(self.corrupt)),
        ]


TALLY = Tally()


# -- database helpers ----------------------------------------------------------------------


def make_db(path: Path, rows: int = 300, bulk: int = 40) -> None:
    """Table t (*rows* rows) and *bulk* rows of 4 KB random data, WAL mode."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row-{i}") for i in range(1, rows + 1)])
    conn.executemany("INSERT INTO bulk (b) VALUES (randomblob(4000))", [()] * bulk)
    conn.commit()
    conn.close()


def change(path: Path) -> None:
    """The live database moves on after a backup: fewer rows, other values."""
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM t WHERE id > 200")
    conn.execute("UPDATE t SET v = 'live-' || id")
    conn.commit()
    conn.close()


def check_database(tally: Tally, path: Path) -> None:
    """integrity_check must say ok; a database that does not is counted, then fails."""
    result = integrity(path)
    if result != ["ok"]:
        tally.corrupt += 1
    assert result == ["ok"], f"{path}: {result[:5]}"
