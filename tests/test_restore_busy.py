"""A restore that meets another connection's lock honours busy_timeout, sleeping.

On a rollback-journal database a reader's open transaction keeps a writer from
committing. The restore's copy (the backup API writing into the live database) must
wait for it no longer than ``busy_timeout``, sleeping between its tries instead of
spinning, then give up with nothing written and the lease given back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

#: A reader holding a read transaction (SHARED lock) until its stdin closes.
READER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN")
    print("READY", conn.execute("SELECT count(*) FROM trades").fetchone()[0], flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
"""


def _rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT id, pair FROM trades ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_reader_that_never_ends_fails_the_restore_after_busy_timeout_without_spinning(
    tmp_path: Path, db_path: Path, db_url: str, spawn, run_cli, backed_up_journal_db,
) -> None:
    backup_id = backed_up_journal_db(["BTC/USDT"] * 50)
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO trades (pair) VALUES ('ETH/USDT')")
    conn.commit()
    conn.close()
    before = _rows(db_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": db_url, "dbguard": {"busy_timeout": 2}}))
    reader = spawn(READER, str(db_path))

    err = tmp_path / "restore.stderr"
    started = time.monotonic()
    with open(err, "w", encoding="utf-8") as sink:
        proc = run_cli.start("restore", backup_id, "--yes", "--config", str(config),
                             stdout=subprocess.DEVNULL, stderr=sink)
        # wait4: the child's own CPU time, to tell sleeping from spinning
        _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.monotonic() - started
    stderr = err.read_text(encoding="utf-8")
    assert proc.returncode == 1, stderr
    assert "stayed locked by another connection" in stderr
    assert "for 2 s, the busy_timeout" in stderr
    assert "the database is exactly as it was" in stderr
    # Spinning burns a core for the whole wait; sleeping between tries does not.
    assert usage.ru_utime + usage.ru_stime < 0.5 * wall, (usage, wall)
    assert _rows(db_path) == before

    check = run_cli("check", "restore", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr  # the lease was given back
    reader.send("done")
    assert reader.wait() == 0
    assert _rows(db_path) == before
