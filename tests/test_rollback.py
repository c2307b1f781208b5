"""``dbguard rollback``: the last replacement undone from its safety backup, exactly, and
that safety backup kept by retention for as long as a rollback needs it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from sqlite_files import content_digest

from dbguard_plugin.settings.config import Config


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, order_id TEXT, qty REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"backup-{i}") for i in range(1, 6)])
    conn.executemany("INSERT INTO fills (order_id, qty) VALUES (?, ?)",
                     [(f"o-{i}", i / 3) for i in range(20)])
    conn.commit()
    conn.close()


def change_live(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM t WHERE id > 3")
    conn.execute("UPDATE t SET v = 'live-' || id")
    conn.executemany("INSERT INTO fills (order_id, qty) VALUES (?, ?)",
                     [(f"later-{i}", i / 7) for i in range(30)])
    conn.commit()
    conn.close()


def ids_in(catalog: Path) -> set[str]:
    return {n[: -len(".json")] for n in os.listdir(catalog)
            if n.endswith(".json") and not n.startswith(".")}


@pytest.fixture
def restored(db_path, db_url, make_guard, run_cli, state_dir):
    """A backup restored over a live database that had moved on; returns
    (backup id, safety id, digest before the restore, digest of the backup)."""
    make_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()
    backup_digest = content_digest(db_path)
    change_live(db_path)
    before = content_digest(db_path)
    result = run_cli("restore", manifest.id, "--db", db_url, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert content_digest(db_path) == backup_digest
    return manifest.id, outcome["safety_id"], before, backup_digest


def test_rollback_puts_the_pre_restore_content_back_exactly(
    restored, run_cli, db_url, db_path, state_dir
):
    backup_id, safety_id, before, _ = restored
    result = run_cli("rollback", "--db", db_url, "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"rolled back: the database holds {safety_id} again")
    assert content_digest(db_path) == before
    last = json.loads((state_dir / "last-replacement.json").read_text())
    assert last["operation"] == "rollback"
    assert last["backup_id"] == safety_id
    assert last["safety_id"] not in ("", safety_id, backup_id)
    assert not (state_dir / "operation.json").exists()


def test_rollback_with_nothing_recorded(db_path, db_url, make_guard, run_cli, state_dir):
    make_db(db_path)
    make_guard(Config(db_url=db_url)).backup()  # backups exist, but nothing was replaced
    before = content_digest(db_path)
    result = run_cli("rollback", "--db", db_url, "--yes")
    assert result.returncode == 1
    assert result.stderr.strip() == f"dbguard: nothing to roll back for {db_url}"
    assert content_digest(db_path) == before
    assert not (state_dir / "last-replacement.json").exists()


def test_rollback_twice_goes_back_and_forth(restored, run_cli, db_url, db_path):
    _, _, before, backup_digest = restored
    seen = []
    for _ in range(3):
        result = run_cli("rollback", "--db", db_url, "--yes", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["operation"] == "rollback"
        seen.append(content_digest(db_path))
    assert seen == [before, backup_digest, before]


def test_the_safety_backup_a_rollback_needs_survives_prune(
    restored, tmp_path, run_cli, db_url, db_path, state_dir
):
    backup_id, safety_id, before, _ = restored
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"db_url": db_url, "dbguard": {
        "keep_last": 1, "keep_daily": 0, "keep_weekly": 0}}))
    catalog = state_dir / "backups"

    for _ in range(2):
        made = run_cli("backup", "--config", str(strict))  # each backup prunes after it
        assert made.returncode == 0, made.stderr
    pruned = run_cli("prune", "--config", str(strict))
    assert pruned.returncode == 0, pruned.stderr
    left = ids_in(catalog)
    assert safety_id in left  # pinned: the rollback below needs it
    assert backup_id not in left  # ...while retention did prune what it may
    assert len(left) == 2  # the newest backup and the pinned safety backup

    result = run_cli("rollback", "--config", str(strict), "--yes")
    assert result.returncode == 0, result.stderr
    assert content_digest(db_path) == before


def test_a_restore_under_strict_retention_keeps_the_backup_it_restores(
    tmp_path, db_path, db_url, make_guard, run_cli
):
    """The safety backup's own prune runs inside the restore: it must not delete the
    backup being restored (keep_last=1 makes that backup the one to go)."""
    make_db(db_path)
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"db_url": db_url, "dbguard": {
        "keep_last": 1, "keep_daily": 0, "keep_weekly": 0}}))
    manifest = make_guard(Config.load(strict)).backup()
    backup_digest = content_digest(db_path)
    change_live(db_path)

    result = run_cli("restore", manifest.id, "--config", str(strict), "--yes")
    assert result.returncode == 0, result.stderr
    assert content_digest(db_path) == backup_digest


# -- undoing a restore that reopened positions ----------------------------------------------

POSITIONS_SCHEMA = """
    CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT, is_open BOOLEAN NOT NULL);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, ft_trade_id INTEGER, ft_is_open BOOLEAN NOT NULL);
"""


def make_positions_db(path: Path) -> None:
    """Backed-up state: trade 1 closed, trade 2 open; their orders closed."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(POSITIONS_SCHEMA)
    conn.executemany("INSERT INTO trades VALUES (?, ?, ?)",
                     [(1, "BTC/USDT", 0), (2, "ETH/USDT", 1)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, 0)", [(1, 1), (2, 2)])
    conn.commit()
    conn.close()


def execute(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.fixture
def forced(db_path, db_url, make_guard, run_cli):
    """The bot traded on after a backup (trade 2 closed, trade 3 and order 3 open); the
    operator restored the backup with --force, dropping trade 3 and order 3 and opening
    trade 2 again. Returns the digest of the database before that restore."""
    make_positions_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()
    execute(db_path, "UPDATE trades SET is_open = 0 WHERE id = 2",
            "INSERT INTO trades VALUES (3, 'SOL/USDT', 1)", "INSERT INTO orders VALUES (3, 3, 1)")
    before = content_digest(db_path)
    refused = run_cli("restore", manifest.id, "--db", db_url, "--yes")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    done = run_cli("restore", manifest.id, "--db", db_url, "--yes", "--force")
    assert done.returncode == 0, done.stderr
    return before


def test_rolling_back_a_forced_restore_needs_no_force(forced, run_cli, db_url, db_path):
    result = run_cli("rollback", "--db", db_url, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("rolled back: the database holds ")
    assert content_digest(db_path) == forced  # trade 2 closed again, trade 3 open again
    # ... and going forward again closes trade 3 and order 3, which the rollback reopened.
    again = run_cli("rollback", "--db", db_url, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_rollback_still_refuses_to_drop_positions_opened_since(
    forced, run_cli, db_url, db_path
):
    execute(db_path, "INSERT INTO trades VALUES (4, 'ADA/USDT', 1)")  # the bot traded on
    now = content_digest(db_path)
    refused = run_cli("rollback", "--db", db_url, "--yes")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    message = refused.stderr
    assert message.startswith("dbguard: rollback to ")
    assert "would drop open positions opened since the replacement it undoes" in message
    assert "  - 1 open trade now missing or closed in the backup: 4\n" in message
    assert "use --force to roll back anyway" in message
    assert "restor" not in message.replace("pre-restore", "")  # a rollback says rollback
    assert content_digest(db_path) == now
    done = run_cli("rollback", "--db", db_url, "--yes", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
