"""Signals: each one is sent by the guard, with its documented keyword arguments, in a real
scenario. Receivers take ``**extra`` as the documentation asks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dbguard_plugin import Operation, OrderEvent, OrderKind, SessionInfo, Verdict, hookimpl, signals
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.settings.config import Config


def test_session_started_and_session_ended(guard, received):
    started = received(signals.session_started)
    ended = received(signals.session_ended)
    session = guard.start_session("S-42", host="custom")
    assert started == [(guard, {"session": session})]
    assert isinstance(started[0][1]["session"], SessionInfo)
    assert ended == []
    guard.end_session()
    assert ended == [(guard, {"session": session})]
    assert len(started) == 1


def test_order_state_changed(guard, received):
    changes = received(signals.order_state_changed)
    guard.admit_order()
    guard.order_event("1", "submitted", symbol="BTC/USDT", side="buy")
    guard.order_event("1", "accepted")
    guard.order_event("1", "filled")
    guard.order_event("1", "cancelled")  # a duplicate terminal event is still reported

    assert all(sender is guard for sender, _ in changes)
    documented = {"event", "before", "after", "in_flight", "anomaly"}
    assert all(documented <= set(kwargs) for _, kwargs in changes)
    summary = [
        (kw["event"].kind, kw["before"], kw["after"], kw["in_flight"], kw["anomaly"])
        for _, kw in changes
    ]
    assert summary == [
        (OrderKind.SUBMITTED, None, OrderKind.SUBMITTED, 1, None),
        (OrderKind.ACCEPTED, OrderKind.SUBMITTED, OrderKind.ACCEPTED, 1, None),
        (OrderKind.FILLED, OrderKind.ACCEPTED, None, 0, None),
        (OrderKind.CANCELLED, None, None, 0, "duplicate"),
    ]
    first = changes[0][1]["event"]
    assert isinstance(first, OrderEvent)
    assert (first.order_id, first.symbol, first.side) == ("1", "BTC/USDT", "buy")


def test_operation_vetoed(guard, received):
    vetoed = received(signals.operation_vetoed)
    assert guard.check("restore").allowed
    assert vetoed == []  # an allowed check sends nothing

    guard.admit_order()
    guard.order_event("9", "submitted")
    verdict = guard.check("restore")
    assert vetoed == [(guard, {"operation": Operation.RESTORE, "verdict": verdict,
                               "reasons": [r.message for r in verdict.reasons]})]
    assert isinstance(vetoed[0][1]["verdict"], Verdict)
    assert "9" in vetoed[0][1]["reasons"][0]


class SessionVeto:
    @hookimpl
    def dbguard_veto(self, guard, operation, state):
        return "freeze" if operation is Operation.MIGRATE else None


def test_operation_forced(guard, received, register_plugin):
    register_plugin(SessionVeto())
    forced = received(signals.operation_forced)
    vetoed = received(signals.operation_vetoed)
    with guard.operation("migrate", force=True, who="erin") as verdict:
        assert verdict.forced
    (sender, kwargs) = forced[0]
    assert len(forced) == 1
    assert sender is guard
    assert kwargs["operation"] is Operation.MIGRATE
    assert kwargs["verdict"] == verdict
    assert kwargs["verdict"].forced is True
    assert kwargs["reasons"] == ["freeze"]
    assert kwargs["who"] == "erin"
    # The veto was reported before it was overridden.
    assert [kw["reasons"] for _, kw in vetoed] == [["freeze"]]


def test_maintenance_refused(guard, received, spawn, scripts, db_url):
    refused = received(signals.maintenance_refused)
    operation = spawn(scripts["operation_holder"], db_url, "restore")
    assert guard.admit_order() is False
    assert len(refused) == 1
    sender, kwargs = refused[0]
    assert sender is guard
    holder = kwargs["holder"]
    assert "restore" in holder
    assert f"pid {operation.pid}" in holder
    operation.send()
    operation.expect("RELEASED")
    assert guard.admit_order() is True
    assert len(refused) == 1


def test_receivers_only_observe(guard, received):
    """A receiver cannot change the outcome: it sees the verdict after it was decided."""
    vetoed = received(signals.operation_vetoed)
    guard.admit_order()
    verdict = guard.check("delete")
    assert not verdict.allowed
    assert vetoed[0][1]["verdict"] is verdict


def _make_db(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO trades DEFAULT VALUES")
    conn.close()


def test_backup_started_and_backup_finished(guard, received, db_path):
    _make_db(db_path)
    started = received(signals.backup_started)
    finished = received(signals.backup_finished)
    failed = received(signals.backup_failed)

    manifest = guard.backup(note="by hand")
    assert started == [(guard, {"reason": "manual", "backup_dir": guard.catalog.directory})]
    path = guard.catalog.data_path(manifest)
    assert finished == [(guard, {"manifest": manifest, "path": path})]
    assert isinstance(finished[0][1]["manifest"], Manifest)
    assert path.is_file()
    assert finished[0][1]["manifest"].note == "by hand"

    guard.start_session("S-signals")  # the session-start backup is announced too
    assert [kw["reason"] for _, kw in started] == ["manual", "session-start"]
    assert [kw["manifest"].reason for _, kw in finished] == ["manual", "session-start"]
    assert failed == []


def test_backup_failed(make_guard, received, db_path, db_url, tmp_path):
    _make_db(db_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    guard = make_guard(Config(db_url=db_url, backup_dir=str(blocker / "backups")))
    started = received(signals.backup_started)
    finished = received(signals.backup_finished)
    failed = received(signals.backup_failed)

    with pytest.raises((OSError, DbGuardError), match="a-file"):
        guard.backup()
    assert [kw["reason"] for _, kw in started] == ["manual"]
    assert finished == []
    ((sender, kwargs),) = failed
    assert sender is guard
    assert set(kwargs) == {"reason", "error"}
    assert kwargs["reason"] == "manual"
    assert str(blocker) in kwargs["error"]

    guard.start_session("S-failing")  # an automatic backup fails without raising
    assert [kw["reason"] for _, kw in failed] == ["manual", "session-start"]
    assert finished == []


def test_orders_paused(make_guard, received, db_path, db_url, tmp_path):
    """A production bot whose session-start backup fails pauses new orders, once, and
    says why; maintenance-refused then follows every refused admission."""
    _make_db(db_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    guard = make_guard(Config(db_url=db_url, environment="production",
                              backup_dir=str(blocker / "backups")))
    paused = received(signals.orders_paused)
    refused = received(signals.maintenance_refused)

    guard.start_session("S-paused")
    ((sender, kwargs),) = paused
    assert sender is guard
    assert set(kwargs) == {"why", "database"}
    assert "session-start backup failed" in kwargs["why"]
    assert kwargs["database"] == db_url
    assert not guard.admit_order(timeout=0)
    assert len(paused) == 1
    assert len(refused) == 1


def test_host_fault(guard, received, state_dir):
    """A status file dbguard cannot write (its name taken by a directory: EISDIR)
    refuses the admission without raising, and says which call met what."""
    faults = received(signals.host_fault)
    refused = received(signals.maintenance_refused)
    guard.start_session("S-fault")
    assert faults == []
    guard.trading.publisher.path.unlink()
    guard.trading.publisher.path.mkdir()
    assert guard.admit_order(timeout=0) is False
    ((sender, kwargs),) = faults
    assert sender is guard
    assert set(kwargs) == {"call", "error", "outcome"}
    assert kwargs["call"] == "admit_order"
    assert kwargs["error"].startswith("IsADirectoryError: ")
    assert kwargs["outcome"] == "the new order was refused"
    assert "dbguard cannot record the admission" in refused[0][1]["holder"]
    assert not guard.lease.holding_orders
    assert not guard.state.busy


SCENARIOS = {
    "host-fault": test_host_fault,
    "orders-paused": test_orders_paused,
    "session-started": test_session_started_and_session_ended,
    "session-ended": test_session_started_and_session_ended,
    "order-state-changed": test_order_state_changed,
    "operation-vetoed": test_operation_vetoed,
    "operation-forced": test_operation_forced,
    "maintenance-refused": test_maintenance_refused,
    "backup-started": test_backup_started_and_backup_finished,
    "backup-finished": test_backup_started_and_backup_finished,
    "backup-failed": test_backup_failed,
}


def test_every_signal_has_a_scenario(scenarios_of):
    # The replacement signals' scenarios live in test_signals_restore.py.
    scenarios = {**SCENARIOS, **scenarios_of("test_signals_restore.py"),
                 **scenarios_of("test_profiles_switch.py")}
    assert {signal.name for signal in signals.ALL} == set(scenarios)
    assert len(signals.ALL) == len(set(signals.ALL))
    assert all(signal.name in scenarios for signal in signals.ALL)


def test_signals_are_private_to_dbguard():
    from blinker import signal as default_namespace_signal

    for sig in signals.ALL:
        assert default_namespace_signal(sig.name) is not sig
