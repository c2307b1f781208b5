"""``dbguard move``: the database changes place, the bot's config follows byte for byte, the
backups go with it, and nothing is left behind when a move is refused.

Moves run as real ``python -m dbguard_plugin move`` processes on real SQLite files, with a
freqtrade-like JSON config (top-level ``db_url`` plus a ``dbguard`` object).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from sqlite_files import file_sha, integrity

from dbguard_plugin.settings.config import Config

JOURNAL = "operation.json"
RENAMES_ENV = "DBGUARD_FAIL_RENAMES"


def make_db(path: Path, rows: int = 50) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row-{i}") for i in range(1, rows + 1)])
    conn.commit()
    conn.close()


def rows(path: Path) -> list[tuple]:
    assert path.is_file(), path
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM t ORDER BY id").fetchall()
    finally:
        conn.close()


def write_config(path: Path, db_url: str) -> str:
    """A freqtrade-like config.json; returns its text."""
    text = json.dumps({
        "max_open_trades": 3,
        "stake_currency": "USDT",
        "dry_run": True,
        "db_url": db_url,
        "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT", "ETH/USDT"]},
        "dbguard": {"environment": "development"},
    }, indent=4) + "\n"
    path.write_text(text)
    return text


def scratch(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-") or n == JOURNAL)


@pytest.fixture
def bot_config(tmp_path, db_path, db_url) -> tuple[Path, str]:
    make_db(db_path)
    config_file = tmp_path / "config.json"
    return config_file, write_config(config_file, db_url)


def test_move_switches_the_config_and_takes_the_backups_along(
    bot_config, tmp_path, db_path, db_url, state_dir, make_guard, run_cli
):
    config_file, text = bot_config
    os.chmod(config_file, 0o640)
    guard = make_guard(Config.load(config_file))
    made = [guard.backup().id, guard.backup().id]
    content = rows(db_path)
    target = tmp_path / "disk2"
    target.mkdir()
    new_path = target / db_path.name
    new_url = f"sqlite:///{new_path}"

    result = run_cli("move", str(target), "--config", str(config_file), "--yes")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith(f"moved {db_path} -> {new_path} (")
    assert second == "  config updated: yes; backups moved: yes; old file kept"

    # The config file: only the URL changed, byte for byte, and its mode is kept.
    assert text.count(db_url) == 1
    assert config_file.read_text() == text.replace(db_url, new_url)
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640

    assert rows(new_path) == content
    assert integrity(new_path) == ["ok"]
    assert rows(db_path) == content  # kept without --delete-old
    new_state = new_path.with_name(new_path.name + ".dbguard")
    assert not (state_dir / "backups").exists()
    for directory in (state_dir, new_state, target, new_state / "backups"):
        assert scratch(directory) == []

    listed = run_cli("backups", "--config", str(config_file), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], Path(r["path"]).parent) for r in json.loads(listed.stdout)] == [
        (made[0], new_state / "backups"), (made[1], new_state / "backups")]
    verified = run_cli("verify", "--all", "--config", str(config_file))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.splitlines()[-1] == "2 ok, 0 bad"
    # The catalog now belongs to the database at its new place: backups go on there.
    again = run_cli("backup", "--config", str(config_file))
    assert again.returncode == 0, again.stderr
    assert str(new_state / "backups") in again.stdout
    # A backup taken before the move is still this database's (the catalog remembers
    # the old place), so it restores without --force.
    back = run_cli("restore", made[0], "--config", str(config_file), "--yes")
    assert back.returncode == 0, back.stderr
    assert rows(new_path) == content


@pytest.mark.parametrize(("old_mode", "new_mode"), [
    (0o644, 0o600),  # readable by everyone: the moved database is private
    (0o664, 0o600),
    (0o600, 0o600),
    (0o400, 0o400),  # more restrictive than 0600: kept
])
def test_the_moved_file_is_private_unless_the_old_one_was_stricter(
    old_mode, new_mode, tmp_path, db_path, db_url, run_cli
):
    make_db(db_path)
    os.chmod(db_path, old_mode)
    content = rows(db_path)
    new_path = tmp_path / "moved.sqlite"
    result = run_cli("move", str(new_path), "--db", db_url, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(new_path.stat().st_mode) == new_mode
    assert rows(new_path) == content
    assert stat.S_IMODE(db_path.stat().st_mode) == old_mode  # the old file is untouched


def test_move_with_delete_old_removes_the_old_file_and_its_wal_and_shm(
    bot_config, tmp_path, db_path, db_url, run_cli
):
    config_file, _ = bot_config
    # A connection left open keeps -wal and -shm, and rows only the WAL holds.
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("INSERT INTO t VALUES (1000, 'only in the wal')")
        conn.commit()
        assert Path(f"{db_path}-wal").stat().st_size > 0
        assert Path(f"{db_path}-shm").exists()
        content = conn.execute("SELECT * FROM t ORDER BY id").fetchall()
        target = tmp_path / "disk2"
        target.mkdir()

        result = run_cli("move", str(target), "--config", str(config_file), "--yes",
                         "--delete-old", "--json")
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert outcome["deleted_old"] is True
        assert outcome["config_updated"] is True
        for suffix in ("", "-wal", "-shm", "-journal"):
            assert not Path(f"{db_path}{suffix}").exists(), suffix
    finally:
        conn.close()
    new_path = target / db_path.name
    assert rows(new_path) == content
    assert (1000, "only in the wal") in content
    assert integrity(new_path) == ["ok"]
    assert json.loads(config_file.read_text())["db_url"] == f"sqlite:///{new_path}"


def _target_exists(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    target = tmp_path / "disk2"
    target.mkdir()
    (target / db_path.name).write_bytes(b"someone else's database")
    return str(target), "already exists; dbguard never overwrites a file"


def _stale_wal_at_target(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    target = tmp_path / "disk2"
    target.mkdir()
    (target / f"{db_path.name}-wal").write_bytes(b"a stale write-ahead log")
    return str(target / db_path.name), "-wal already exists"


def _dir_missing(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    return str(tmp_path / "nowhere" / "deeper" / "x.sqlite"), "create the directory first"


def _symlinked_dir(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    real = tmp_path / "real-disk"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    return str(tmp_path / "link"), "is a symlink; give the real directory"


def _same_path(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    return str(db_path), "is where the database already is"


def _same_file_through_a_link(tmp_path: Path, db_path: Path) -> tuple[str, str]:
    os.symlink(tmp_path, tmp_path / "alias")
    return str(tmp_path / "alias" / db_path.name), "is where the database already is"


FAILED_MOVES = {
    "target exists": _target_exists,
    "stale wal at the target": _stale_wal_at_target,
    "target dir missing": _dir_missing,
    "target is a symlinked dir": _symlinked_dir,
    "same path": _same_path,
    "same file through a symlink": _same_file_through_a_link,
}


def _tree(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith((".stderr", ".py")) or name.startswith("child_"):
                continue
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = fh.read()
    return found


@pytest.mark.parametrize("case", list(FAILED_MOVES))
def test_a_refused_move_changes_nothing(
    case, bot_config, tmp_path, db_path, state_dir, make_guard, run_cli
):
    config_file, text = bot_config
    make_guard(Config.load(config_file)).backup()
    new_path, message = FAILED_MOVES[case](tmp_path, db_path)
    sha = file_sha(db_path)
    before = _tree(tmp_path)

    # Refused before the lease is taken: the CLI in this process is enough.
    result = run_cli("move", new_path, "--config", str(config_file), "--yes", "--delete-old",
                     in_process=True)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert config_file.read_text() == text
    assert file_sha(db_path) == sha
    assert not (state_dir / JOURNAL).exists()
    # No stray file anywhere: the whole tree is as it was (the database's bytes aside,
    # checked above through its checkpointed hash).
    after = _tree(tmp_path)
    for tree in (before, after):
        for name in [n for n in tree if n.startswith(db_path.name) and "/" not in n]:
            tree.pop(name)
    assert after == before


#: A real move (the engine in a child), paused in the host's release-connections hook:
#: the journal is written and the lease held. Prints READY, goes on at the first stdin
#: line. argv: config path, new path
PAUSED_MOVE = """
    import sys
    from dbguard_plugin import Guard, hookimpl
    from dbguard_plugin.operations.move import move
    from dbguard_plugin.plugin.manager import pm

    class Host:
        @hookimpl
        def dbguard_release_connections(self, guard, operation):
            print("READY", operation.value, flush=True)
            sys.stdin.readline()

    pm.register(Host())
    guard = Guard.from_config(sys.argv[1])
    outcome = move(guard, sys.argv[2], config_path=sys.argv[1])
    print("MOVED", outcome.new_path, flush=True)
    guard.close()
"""


def test_admit_order_is_refused_during_a_move(
    bot_config, tmp_path, db_path, spawn, make_guard, run_cli
):
    config_file, _ = bot_config
    target = tmp_path / "disk2"
    target.mkdir()
    bot = make_guard(Config.load(config_file))
    moving = spawn(PAUSED_MOVE, str(config_file), str(target))
    assert moving.output[-1] == "READY move"

    assert bot.admit_order() is False  # maintenance: the move holds the lease
    elsewhere = tmp_path / "disk3"
    elsewhere.mkdir()
    second = run_cli("move", str(elsewhere), "--config", str(config_file), "--yes")
    assert second.returncode == 3, second.stderr
    assert f"move in progress by pid {moving.pid}" in second.stderr
    assert os.listdir(elsewhere) == []

    moving.send()
    assert moving.expect("MOVED") == f"MOVED {target / db_path.name}"
    assert moving.wait() == 0, moving.stderr
    assert bot.admit_order() is True
    bot.withdraw_admission()
    follower = make_guard(Config.load(config_file))  # a bot started on the new config
    assert follower.location.sqlite_path == target / db_path.name
    assert follower.admit_order() is True
    follower.withdraw_admission()


# -- renames that fail like on Windows -----------------------------------------------------


def test_backup_and_move_retry_renames_that_fail_with_permission_error(
    bot_config, tmp_path, db_path, db_url, run_cli, child_env
):
    config_file, text = bot_config
    flaky = child_env(**{RENAMES_ENV: "3"})
    backup = run_cli("backup", "--config", str(config_file), "--json", env=flaky)
    assert backup.returncode == 0, backup.stderr
    made = json.loads(backup.stdout)
    assert made["verified"] is True

    target = tmp_path / "disk2"
    target.mkdir()
    content = rows(db_path)
    moved = run_cli("move", str(target), "--config", str(config_file), "--yes", env=flaky)
    assert moved.returncode == 0, moved.stderr
    new_path = target / db_path.name
    assert config_file.read_text() == text.replace(db_url, f"sqlite:///{new_path}")
    assert rows(new_path) == content
    verified = run_cli("verify", made["id"], "--config", str(config_file))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert scratch(target) == []


def test_a_rename_that_keeps_failing_fails_the_backup_cleanly(
    db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    make_db(db_path)
    first = make_guard(Config(db_url=db_url)).backup()
    catalog = state_dir / "backups"

    failed = run_cli("backup", "--db", db_url, env=child_env(**{RENAMES_ENV: "100"}))
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        "dbguard: injected: the file is in use by another process")
    assert "Traceback" not in failed.stderr

    listed = run_cli("backups", "--db", db_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [first.id]
    names = os.listdir(catalog)
    assert [n for n in names if n.startswith(".tmp-")] == []
    assert sorted(n for n in names if not n.startswith(".")) == [
        f"{first.id}.json", first.file]
