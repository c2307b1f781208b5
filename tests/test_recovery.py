"""Recovery of an interrupted restore: by the plugin at session start, and never while a bot
has orders in flight (it waits for them, then happens on the next command)."""

from __future__ import annotations

import json
import logging
import signal

import pytest
from sqlite_files import BACKUP_ROWS, LIVE_ROWS, change_live, make_db, rows

from dbguard_plugin.settings.config import Config

CRASH_ENV = "DBGUARD_CRASH_AT"


@pytest.fixture
def interrupted(db_path, db_url, make_guard, run_cli, child_env, state_dir):
    """A restore killed right after its copy committed, before it was recorded."""
    make_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()
    change_live(db_path)
    assert rows(db_path) == LIVE_ROWS
    crashed = run_cli("restore", manifest.id, "--db", db_url, "--yes",
                      env=child_env(**{CRASH_ENV: "restore:copied"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    journal = state_dir / "operation.json"
    assert json.loads(journal.read_text())["backup_id"] == manifest.id
    assert not (state_dir / "last-replacement.json").exists()
    return manifest


def test_session_start_finishes_an_interrupted_restore(
    interrupted, make_guard, db_url, db_path, state_dir, caplog
):
    guard = make_guard(Config(db_url=db_url))
    with caplog.at_level(logging.INFO, logger="dbguard_plugin"):
        guard.start_session("S-after-crash")
    assert not (state_dir / "operation.json").exists()
    assert rows(db_path) == BACKUP_ROWS
    assert (f"finished the interrupted restore of backup {interrupted.id}: the database "
            "holds that backup, checked") in caplog.text
    last = json.loads((state_dir / "last-replacement.json").read_text())
    assert last["backup_id"] == interrupted.id
    # Recovery ran before the session-start backup, which therefore holds the restored rows.
    (started,) = [m for m in guard.catalog.manifests() if m.reason == "session-start"]
    assert started.tables == {"t": len(BACKUP_ROWS)}


#: A bot with one order in flight and no session: it never triggers recovery itself.
#: Prints READY; on the first stdin line the order fills (FILLED); exits on the second.
BOT_WITH_AN_ORDER = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    assert guard.admit_order()
    guard.order_event("O-1", "submitted", symbol="BTC/USDT", side="buy")
    guard.publish_status_now()
    print("READY", flush=True)
    sys.stdin.readline()
    guard.order_event("O-1", "filled")
    print("FILLED", flush=True)
    sys.stdin.readline()
    guard.close()
"""


def test_recovery_waits_for_orders_in_flight_then_happens(
    interrupted, spawn, run_cli, make_guard, db_url, db_path, state_dir
):
    journal = state_dir / "operation.json"
    bot = spawn(BOT_WITH_AN_ORDER, db_url)

    deferred = run_cli("status", "--db", db_url)
    assert deferred.returncode == 0, deferred.stderr
    assert "recovered:" not in deferred.stderr
    assert "waits for the lease to be free" in deferred.stderr
    assert f"bot pid {bot.pid}" in deferred.stdout
    assert journal.exists()

    other = make_guard(Config(db_url=db_url, backup_on_session_start=False))
    other.start_session("S-while-busy")  # the plugin defers too, and the session starts
    assert journal.exists()
    assert other.end_session() is not None

    bot.send()
    bot.expect("FILLED")
    done = run_cli("status", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert (f"dbguard: recovered: finished the interrupted restore of backup "
            f"{interrupted.id}") in done.stderr
    assert not journal.exists()
    assert rows(db_path) == BACKUP_ROWS
    bot.send()
    assert bot.wait() == 0, bot.stderr
