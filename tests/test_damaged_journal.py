"""A damaged operation journal is an operation nobody can account for.

``operation.json`` is written atomically, so a crash never tears it; what damages it is
bit rot, a hand edit, a restore of the state directory from an older copy, or a FIFO or
device put in its place. Then nothing may assume the interrupted operation was decided:
no command overwrites the journal (a restore is refused), prune deletes nothing (the
journal named the backups it needed), a production bot refuses new orders, and every
command says which file and what to do, without a traceback and without hanging. The
operator checks the database and runs ``dbguard recover --keep``, which moves the journal
aside (kept as evidence) and audits the choice; then everything works again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from cli_runs import Cli
from crash_cases import orders_wait_for_the_decision
from sqlite_files import make_db

from dbguard_plugin import Guard
from dbguard_plugin.settings.config import Config

#: What a damaged journal may hold, by why it is damaged.
DAMAGE = {"not-json": b"{\"operation\": \"restore\", \"st", "a-list": b"[1, 2]",
          "no-operation": b"{\"step\": \"copying\"}", "binary": b"\xff\xfe\x00\x01",
          "fifo": None}


def damage(state_dir: Path, kind: str) -> Path:
    path = state_dir / "operation.json"
    content = DAMAGE[kind]
    if content is None:
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    return path


@pytest.fixture
def backed_up(db_path: Path, db_url: str, run_cli: Cli) -> tuple[str, str]:
    """A database with two backups; the first one's id and the second's."""
    make_db(db_path)
    ids = []
    for _ in range(2):
        made = run_cli("backup", "--json", "--db", db_url)
        assert made.returncode == 0, made.stderr
        ids.append(json.loads(made.stdout)["id"])
    return ids[0], ids[1]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_journal_is_never_overwritten_and_prunes_nothing(
        kind, backed_up, db_url, state_dir, run_cli: Cli) -> None:
    first, _second = backed_up
    path = damage(state_dir, kind)
    said = f"{path}: the operation journal is unreadable"

    status = run_cli("status", "--json", "--db", db_url, timeout=60)
    assert status.returncode == 0, status.stderr
    assert said in status.stderr
    assert json.loads(status.stdout)["lease"]["orders"] == "free"
    assert said in json.loads(status.stdout)["recovery"]["unreadable"]

    checked = run_cli("check", "restore", "--json", "--db", db_url, timeout=60)
    assert checked.returncode == 3, checked.stdout + checked.stderr
    (reason,) = json.loads(checked.stdout)["reasons"][:1]
    assert reason["code"] == "journal-unreadable"
    assert reason["overridable"] is False
    restored = run_cli("restore", first, "--yes", "--force", "--db", db_url, timeout=60)
    assert restored.returncode == 3, restored.stdout + restored.stderr
    assert said in restored.stderr
    assert "dbguard recover --keep" in restored.stderr
    pruned = run_cli("prune", "--db", db_url, env=None, timeout=60)
    assert pruned.returncode == 1
    assert said in pruned.stderr
    if DAMAGE[kind] is not None:
        assert path.read_bytes() == DAMAGE[kind]  # nothing rewrote it
    assert len(list(state_dir.glob("backups/2*.json"))) == 2

    recovered = run_cli("recover", "--json", "--db", db_url, timeout=60)
    assert recovered.returncode == 5, recovered.stdout + recovered.stderr
    assert said in json.loads(recovered.stdout)["unreadable"]
    assert "Traceback" not in status.stderr + restored.stderr + recovered.stderr


def test_keep_moves_it_aside_audited_and_a_restore_works_again(
        backed_up, db_url, state_dir, run_cli: Cli) -> None:
    first, _second = backed_up
    path = damage(state_dir, "not-json")
    kept = run_cli("recover", "--keep", "--db", db_url)
    assert kept.returncode == 0, kept.stderr
    assert "its operation journal was unreadable" in kept.stdout
    assert not path.exists()
    (aside,) = state_dir.glob("operation.json.damaged-*")
    assert aside.read_bytes() == DAMAGE["not-json"]
    entry = json.loads((state_dir / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["decision"] == "kept the database as it was"
    assert "unreadable" in entry["interrupted"]["undecided"]
    restored = run_cli("restore", first, "--yes", "--db", db_url)
    assert restored.returncode == 0, restored.stderr


@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_production_bot_refuses_orders_while_it_is_damaged(
        environment, backed_up, db_url, state_dir, make_guard, run_cli: Cli, caplog) -> None:
    path = damage(state_dir, "a-list")
    guard: Guard = make_guard(Config(db_url=db_url, environment=environment))
    with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
        guard.start_session("S-damaged")  # never raises into the bot
    assert f"{path}: the operation journal is unreadable" in caplog.text
    orders_wait_for_the_decision(guard, environment, run_cli, db_url)
