"""A writer killed mid-transaction on a rollback-journal database leaves a hot journal:
the database is healthy, and the next read-write connection rolls the journal back.
dbguard must read it as SQLite would, never call it damaged (DESIGN.md, fact 9)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

#: A bot killed in the middle of a big transaction: its cache spills changed pages into
#: the database file, so the file itself is half new until the journal is rolled back.
KILLED_WRITER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA cache_size=5")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE trades SET pair = 'HALF-WRITTEN' || id")
    print("READY", flush=True)
    sys.stdin.readline()
"""


def _pairs(path: Path) -> list[str]:
    conn = sqlite3.connect(path)  # read-write: rolls a hot journal back, as SQLite does
    try:
        return [r[0] for r in conn.execute("SELECT pair FROM trades ORDER BY id")]
    finally:
        conn.close()


def test_a_hot_journal_is_rolled_back_not_called_damaged(
    db_path: Path, db_url: str, spawn, run_cli, backed_up_journal_db
) -> None:
    backup_id = backed_up_journal_db([f"P{i}/USDT" + "x" * 200 for i in range(3000)])
    writer = spawn(KILLED_WRITER, str(db_path))
    writer.kill()
    journal = Path(f"{db_path}-journal")
    assert journal.stat().st_size > 0, "the killed writer left no hot journal"

    preview = run_cli("restore", backup_id, "--preview", "--db", db_url)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "cannot read" not in preview.stderr
    doctor = run_cli("doctor", "--db", db_url, "--json")
    findings = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
    assert "cannot read" not in findings["journal mode"]["message"]
    assert findings["journal mode"]["status"] != "fail"
    assert not journal.exists() or journal.stat().st_size == 0
    assert "HALF-WRITTEN1" not in _pairs(db_path)
    assert len(_pairs(db_path)) == 3000
