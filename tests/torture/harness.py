"""What the torture tests share besides fixtures: the tally and the database helpers.

Test modules import these by name (``from harness import ...``); the fixtures that hand
them out live in conftest.py. The readers shared with the rest of the suite
(integrity, content_digest, file_sha) are in tests/sqlite_files.py.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_files import integrity

#: Crash points only a backup into the repository, its collection or ``dbguard convert``
#: reaches: test_repository.py drives them (with a writer); the crash matrix does not.
REPOSITORY_ONLY = re.compile(r"^(repository:|gc:|convert:|backup:chunked$)")

#: Each of them -> the command killed there (test_repository.py).
REPOSITORY_POINTS = {
    "repository:pack-written": "backup",
    "repository:indexed": "backup",
    "backup:chunked": "backup",
    "backup:manifested": "backup",
    "prune:manifest-deleted": "prune",
    "gc:repacked": "prune",
    "gc:index-removed": "prune",
    "gc:leftover-removed": "prune after a killed backup",
    "convert:chunked": "convert",
    "convert:manifested": "convert",
}

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


# -- the live writer ---------------------------------------------------------------------


#: argv: database path. Commits rows (a few hundred a second) until stdin says PAUSE
#: (answers PAUSED, waits for GO) or STOP (answers how many rows it wrote, errors it met).
WRITER = """
    import sqlite3, sys, threading

    conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
    run = threading.Event()
    run.set()
    stop = threading.Event()
    paused = threading.Event()
    commands = []

    def control():
        for line in sys.stdin:
            commands.append(line.strip())
            if line.strip() in ("PAUSE", "STOP"):
                run.clear()
            elif line.strip() == "GO":
                paused.clear()
                run.set()
        stop.set()
        run.set()

    threading.Thread(target=control, daemon=True).start()
    written = errors = 0
    print("READY", flush=True)
    while not stop.is_set():
        if not run.is_set():
            if commands and commands[-1] == "STOP":
                break
            if not paused.is_set():
                paused.set()
                print("PAUSED", flush=True)
            run.wait()
            continue
        try:
            conn.execute("INSERT INTO numbered (n, note) "
                         "SELECT coalesce(max(n), 0) + 1, 'committed' FROM numbered")
            written += 1
            # pacing only (a few hundred commits a second): an unpaced loop of fsyncs
            # starves the snapshot copy for seconds, which is a benchmark's business
            stop.wait(0.002)
        except sqlite3.Error as exc:
            errors += 1
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
    print(f"WROTE {written} {errors}", flush=True)
    conn.close()
"""


def create_numbered(path: Path) -> None:
    """Table numbered (the writer's rows) and 200 rows of 2 KB random data, WAL mode."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE numbered (n INTEGER PRIMARY KEY, note TEXT NOT NULL)")
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
    conn.executemany("INSERT INTO bulk (b) VALUES (randomblob(2000))", [()] * 200)
    conn.commit()
    conn.close()


def committed(path: Path) -> int:
    """Rows committed now, as any new reader sees them."""
    conn = sqlite3.connect(path, timeout=60)
    try:
        return int(conn.execute("SELECT coalesce(max(n), 0) FROM numbered").fetchone()[0])
    finally:
        conn.close()
