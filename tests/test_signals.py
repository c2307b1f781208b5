"""Signals: each one is sent by the guard, with its documented keyword arguments, in a real
scenario. Receivers take ``**extra`` as the documentation asks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbguard_plugin import Operation, OrderEvent, OrderKind, SessionInfo, Verdict, hookimpl, signals


@pytest.fixture
def received() -> Iterator[Callable[[Any], list[tuple[object, dict[str, Any]]]]]:
    """``received(signal)`` connects a recording receiver (strongly) and returns its log."""
    connected: list[tuple[Any, Callable[..., None]]] = []

    def connect(signal: Any) -> list[tuple[object, dict[str, Any]]]:
        log: list[tuple[object, dict[str, Any]]] = []

        def receiver(sender: object, **extra: Any) -> None:
            log.append((sender, extra))

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return log

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


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


SCENARIOS = {
    "session-started": test_session_started_and_session_ended,
    "session-ended": test_session_started_and_session_ended,
    "order-state-changed": test_order_state_changed,
    "operation-vetoed": test_operation_vetoed,
    "operation-forced": test_operation_forced,
    "maintenance-refused": test_maintenance_refused,
}


def test_every_signal_has_a_scenario():
    assert {signal.name for signal in signals.ALL} == set(SCENARIOS)
    assert len(signals.ALL) == len(set(signals.ALL))
    assert all(signal.name in SCENARIOS for signal in signals.ALL)


def test_signals_are_private_to_dbguard():
    from blinker import signal as default_namespace_signal

    for sig in signals.ALL:
        assert default_namespace_signal(sig.name) is not sig
