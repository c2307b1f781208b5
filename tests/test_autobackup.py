"""Automatic backups: at session start and end, on an interval between orders, never an
exception into the host, and (in production) new orders paused after a failed
session-start backup until a verified backup newer than the session exists."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dbguard_plugin import signals
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.settings.config import Config


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT)")
    conn.execute("INSERT INTO trades (pair) VALUES ('BTC/USDT')")
    conn.close()


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])
    finally:
        conn.close()


def blocked_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A backup_dir that cannot be created: its parent is a regular file. (Tests run as
    root, so a read-only directory would not stop anything.) Returns (file, backup_dir)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the backups' parent directory should be")
    return blocker, blocker / "backups"


# -- session boundaries --------------------------------------------------------------------------


def test_session_start_and_end_are_backed_up(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard()
    session = guard.start_session("S-auto")
    (start,) = guard.catalog.manifests()  # made before start_session returned
    assert start.reason == "session-start"
    assert start.trading_state["session_id"] == "S-auto"
    assert start.trading_state["orders_in_flight"] == []
    assert start.created_ts >= session.started_at

    # The bot trades; the session-end backup holds what it wrote.
    assert guard.admit_order()
    guard.order_event("1", "submitted", symbol="BTC/USDT", side="buy")
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("INSERT INTO trades (pair) VALUES ('ETH/USDT')")
    conn.close()
    guard.order_event("1", "filled")
    assert guard.end_session() == session

    start_again, end = guard.catalog.manifests()
    assert start_again == start
    assert end.reason == "session-end"
    assert end.trading_state["session_id"] == "S-auto"
    assert rows_in(guard.catalog.data_path(start)) == 1
    assert rows_in(guard.catalog.data_path(end)) == 2
    assert end.tables == {"trades": 2}


@pytest.mark.parametrize(("key", "reasons"), [
    ("backup_on_session_start", ["session-end"]),
    ("backup_on_session_end", ["session-start"]),
])
def test_session_backups_can_be_switched_off(key, reasons, make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config.from_mapping({"db_url": db_url, key: False}))
    guard.start_session("S-off")
    guard.end_session()
    assert [m.reason for m in guard.catalog.manifests()] == reasons


def test_disabled_guard_makes_no_backups(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, enabled=False))
    guard.start_session("S-x")
    guard.end_session()
    assert guard.catalog.manifests() == []


# -- failures never reach the host ---------------------------------------------------------------


def test_a_failing_backup_never_raises_into_the_host(
    make_guard, db_path, db_url, tmp_path, received
):
    make_db(db_path)
    _, backup_dir = blocked_dir(tmp_path)
    failed = received(signals.backup_failed, keywords_only=True)
    finished = received(signals.backup_finished, keywords_only=True)
    guard = make_guard(Config(db_url=db_url, backup_dir=str(backup_dir)))

    session = guard.start_session("S-fail")  # does not raise
    assert guard.end_session() == session  # does not raise either
    assert [f["reason"] for f in failed] == ["session-start", "session-end"]
    assert all(str(backup_dir) in f["error"] for f in failed)
    assert finished == []
    assert guard.automatic_backup("scheduled") is False
    assert failed[-1]["reason"] == "scheduled"


def test_production_pauses_orders_until_a_verified_backup_newer_than_the_session(
    make_guard, db_path, db_url, tmp_path, received, run_cli
):
    make_db(db_path)
    catalog_dir = tmp_path / "catalog"
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {"db_url": db_url,
                                                   "backup_dir": str(catalog_dir)}}))
    config = Config.load(config_file)
    assert config.environment == "production"
    old = make_guard(config).backup()  # a verified backup from before the session

    # The catalog becomes unusable: a regular file where the directory was.
    away = tmp_path / "catalog.away"
    catalog_dir.rename(away)
    catalog_dir.write_text("in the way")
    refused = received(signals.maintenance_refused, keywords_only=True)
    failed = received(signals.backup_failed, keywords_only=True)
    guard = make_guard(config)
    session = guard.start_session("S-paused")
    assert [f["reason"] for f in failed] == ["session-start"]
    assert guard.paused is not None
    assert "dbguard backup" in guard.paused
    assert guard.admit_order() is False
    assert guard.admit_order() is False
    assert refused
    assert refused[-1]["holder"] == guard.paused
    assert guard.state.snapshot().admissions == 0

    # Fixed, but the only verified backup is older than the session: still paused.
    catalog_dir.unlink()
    away.rename(catalog_dir)
    assert [m.id for m in guard.catalog.manifests()] == [old.id]
    assert old.created_ts < session.started_at
    assert guard.admit_order() is False

    # An operator makes one from another process: orders resume.
    made = run_cli("backup", "--config", str(config_file))
    assert made.returncode == 0, made.stderr
    assert guard.admit_order() is True
    assert guard.paused is None
    guard.order_event("A-1", "submitted")
    guard.order_event("A-1", "filled")


def test_production_pause_lifts_after_guard_backup_once_fixed(
    make_guard, db_path, db_url, tmp_path
):
    make_db(db_path)
    blocker, backup_dir = blocked_dir(tmp_path)
    guard = make_guard(Config(db_url=db_url, backup_dir=str(backup_dir)))
    guard.start_session("S-fix")
    assert guard.admit_order() is False
    blocker.unlink()
    assert guard.admit_order() is False  # fixed, but no backup yet
    guard.backup()
    assert guard.admit_order() is True


@pytest.mark.parametrize(("environment", "required", "paused"), [
    ("development", None, False),
    ("testing", None, False),
    ("development", True, True),
    ("production", False, False),
])
def test_pause_follows_environment_and_require_backup_before_session(
    environment, required, paused, make_guard, db_path, db_url, tmp_path, received
):
    make_db(db_path)
    _, backup_dir = blocked_dir(tmp_path)
    failed = received(signals.backup_failed, keywords_only=True)
    guard = make_guard(Config(db_url=db_url, backup_dir=str(backup_dir),
                              environment=environment,
                              require_backup_before_session=required))
    guard.start_session("S-env")
    assert [f["reason"] for f in failed] == ["session-start"]
    assert (guard.paused is not None) is paused
    assert guard.admit_order() is (not paused)


def test_a_database_that_does_not_exist_yet_is_skipped_not_a_failure(
    make_guard, tmp_path, received
):
    url = f"sqlite:///{tmp_path / 'new-bot.sqlite'}"
    guard = make_guard(Config(db_url=url))
    guard.start_session("S-new")
    assert guard.paused is None
    assert guard.admit_order() is True
    guard.order_event("1", "submitted")
    guard.order_event("1", "filled")
    guard.end_session()
    assert guard.catalog.manifests() == []


def test_a_skipped_backup_is_not_signalled_as_failed(make_guard, tmp_path, received):
    failed = received(signals.backup_failed, keywords_only=True)
    guard = make_guard(Config(db_url=f"sqlite:///{tmp_path / 'new-bot.sqlite'}"))
    guard.start_session("S-new")
    guard.end_session()
    assert failed == []


# -- interval backups ----------------------------------------------------------------------------


def test_backup_interval_is_at_least_a_minute():
    with pytest.raises(ConfigError, match=r"dbguard\.backup_interval = 59"):
        Config.from_mapping({"backup_interval": 59})
    assert Config.from_mapping({"backup_interval": 60}).backup_interval == 60
    assert Config.from_mapping({"backup_interval": 0}).backup_interval == 0


def _age_bookkeeping(guard: Any, seconds: float) -> None:
    """Pretend the guard's last backup (and last attempt) happened *seconds* earlier."""
    for name in ("last_backup", "last_attempt"):
        setattr(guard.backups, name, getattr(guard.backups, name) - seconds)


def test_tick_takes_the_interval_backup_only_between_orders(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config.from_mapping({"db_url": db_url, "backup_interval": 60}))
    guard.tick()
    assert guard.catalog.manifests() == []  # no session, no interval backup

    guard.start_session("S-tick")
    guard.tick()
    assert [m.reason for m in guard.catalog.manifests()] == ["session-start"]  # not due

    _age_bookkeeping(guard, 61)
    assert guard.admit_order()
    guard.order_event("7", "submitted", symbol="BTC/USDT", side="buy")
    guard.tick()
    guard.order_event("7", "accepted")
    guard.tick()
    assert [m.reason for m in guard.catalog.manifests()] == ["session-start"]  # in flight

    guard.order_event("7", "filled")
    guard.tick()
    reasons = [m.reason for m in guard.catalog.manifests()]
    assert reasons == ["session-start", "scheduled"]
    scheduled = guard.catalog.manifests()[-1]
    assert scheduled.trading_state["orders_in_flight"] == []
    assert scheduled.trading_state["session_id"] == "S-tick"

    guard.tick()  # just backed up: not due again
    assert len(guard.catalog.manifests()) == 2


def test_tick_does_nothing_without_an_interval(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, backup_on_session_start=False))
    guard.start_session("S-none")
    _age_bookkeeping(guard, 10 * 86_400)
    guard.tick()
    assert guard.catalog.manifests() == []
