"""A 0-byte database file is a valid, empty SQLite database (what ``sqlite3.connect()``
leaves before the first table): nothing to back up, and no reason to pause a bot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dbguard_plugin import Guard
from dbguard_plugin.settings.config import Config


def test_backup_of_an_empty_file_says_there_is_nothing_to_lose(db_path: Path, db_url: str,
                                                               run_cli) -> None:
    sqlite3.connect(db_path).close()
    assert db_path.stat().st_size == 0
    result = run_cli("backup", "--db", db_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{db_path}: the database is empty (0 bytes" in result.stderr
    assert ".tmp-" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_production_session_on_an_empty_file_keeps_trading(db_path: Path,
                                                             db_url: str) -> None:
    sqlite3.connect(db_path).close()
    guard = Guard(Config(db_url=db_url, environment="production"))
    try:
        guard.start_session("S-empty")
        assert guard.paused is None
        assert guard.admit_order(timeout=0)
        guard.order_event("E-1", "filled", symbol="BTC/USDT", side="buy")
    finally:
        guard.close()


def test_a_new_wal_database_whose_pages_are_only_in_its_wal_is_backed_up(
    db_path: Path, db_url: str, tmp_path: Path
) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO trades VALUES (1)")
    guard = Guard(Config(db_url=db_url, backup_dir=str(tmp_path / "backups")))
    try:
        if db_path.stat().st_size == 0:  # only then is this the case under test
            assert Path(f"{db_path}-wal").stat().st_size > 0
        manifest = guard.backup()
        assert manifest.tables == {"trades": 1}
    finally:
        guard.close()
        conn.close()
