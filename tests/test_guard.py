"""The guard: reasons, the session rule per environment, operations, threads."""

from __future__ import annotations

import contextlib
import json
import os
import threading

import pytest

from dbguard_plugin import Guard, Operation
from dbguard_plugin.errors import ConfigError, VetoedError
from dbguard_plugin.settings.config import Config


def _codes(verdict) -> list[str]:
    return [reason.code for reason in verdict.reasons]


def test_guard_needs_a_database():
    with pytest.raises(ConfigError, match="--db URL"):
        Guard(Config())


@pytest.mark.parametrize("url", [
    "sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
    # the driver hands a URL's query to SQLite with uri=true: this is memory, not the file
    "sqlite:///file:/tmp/bot.sqlite?mode=memory&uri=true",
    "sqlite+pysqlite:///file:/tmp/bot.sqlite?uri=true&vfs=memdb",
    "sqlite:///file:/tmp/bot.sqlite?mode=rw&uri=true&mode=memory",
])
def test_in_memory_sqlite_is_refused(url):
    with pytest.raises(ConfigError, match="in-memory"):
        Guard(db_url=url)


def test_check_names_this_process_orders(guard):
    guard.admit_order()
    guard.order_event("11", "submitted", symbol="BTC/USDT", side="buy")
    guard.admit_order()
    guard.order_event("12", "submitted", symbol="ETH/USDT", side="sell")
    guard.order_event("12", "accepted")

    verdict = guard.check("restore")
    assert not verdict.allowed
    (reason,) = verdict.reasons
    assert reason.code == "orders-in-flight"
    assert reason.overridable is False
    assert reason.details["pid"] == os.getpid()
    assert reason.details["orders"] == ["11 (BTC/USDT buy, submitted)",
                                        "12 (ETH/USDT sell, accepted)"]
    assert "2 orders in flight" in reason.message
    assert "(this process)" in reason.message
    assert "restore: vetoed" in verdict.summary()

    guard.order_event("11", "filled")
    guard.order_event("12", "cancelled")
    assert guard.check("restore").allowed


def test_check_names_an_admission_before_its_order(guard):
    assert guard.admit_order()
    verdict = guard.check("vacuum")
    (reason,) = verdict.reasons
    assert reason.code == "orders-in-flight"
    assert "about to place an order" in reason.message
    guard.withdraw_admission()
    assert guard.check("vacuum").allowed


def test_unknown_operation_is_refused_with_the_valid_names(guard):
    with pytest.raises(ValueError, match="unknown operation 'reboot'") as info:
        guard.check("reboot")
    for op in Operation:
        assert op.value in str(info.value)


def test_operation_names_are_parsed_loosely(guard):
    assert guard.check("Profile-Switch").operation is Operation.PROFILE_SWITCH


# -- the session rule, per environment ----------------------------------------------------

SESSION_RULE = {
    "production": set(Operation),
    "testing": {Operation.MOVE, Operation.PROFILE_SWITCH, Operation.MIGRATE,
                Operation.VACUUM, Operation.DELETE},
    "development": set(),
}


@pytest.mark.parametrize("environment", sorted(SESSION_RULE))
def test_session_rule_in_this_process(make_guard, db_url, environment):
    guard = make_guard(Config(db_url=db_url, environment=environment))
    guard.start_session("S-1")
    for op in Operation:
        verdict = guard.check(op)
        if op in SESSION_RULE[environment]:
            assert _codes(verdict) == ["session-active"], (environment, op)
            assert verdict.overridable
            assert "session S-1" in verdict.reasons[0].message
            assert environment in verdict.reasons[0].message
        else:
            assert verdict.allowed, (environment, op, verdict)
            assert verdict.reasons == ()
            assert any("session S-1" in w for w in verdict.warnings)
    guard.end_session()
    assert all(guard.check(op).allowed and not guard.check(op).warnings for op in Operation)


def test_session_rule_across_processes(spawn, scripts, run_cli, tmp_path, db_url):
    bot = spawn(scripts["bot_with_session"], db_url)
    development = tmp_path / "dev.json"
    development.write_text(json.dumps({"dbguard": {"environment": "development"}}))

    production = run_cli("check", "restore", "--db", db_url, "--json")
    assert production.returncode == 3, production.stderr
    (reason,) = json.loads(production.stdout)["reasons"]
    assert reason["code"] == "session-active"
    assert f"pid {bot.pid}" in reason["message"]
    assert "S-idle" in reason["message"]

    relaxed = run_cli("check", "restore", "--db", db_url, "--config", str(development))
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "restore: allowed" in relaxed.stdout
    assert "a trading session is active" in relaxed.stdout
    assert "S-idle" in relaxed.stdout

    bot.send()  # ends the session cleanly
    assert bot.wait() == 0
    assert run_cli("check", "restore", "--db", db_url).returncode == 0


# -- operations ---------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _fail_inside(guard: Guard, operation: str) -> None:
    with guard.operation(operation):
        assert guard.lease.holding_exclusive
        raise Boom("the restore failed half way")


def test_operation_releases_the_lease_on_exception(guard, spawn, state_dir):
    with pytest.raises(Boom):
        _fail_inside(guard, "restore")
    assert not guard.lease.holding_exclusive
    assert list((state_dir / "holders").glob("operation-*.json")) == []
    # Another process can now run an operation: the lock is really free.
    other = spawn(OPERATION_THEN_EXIT, guard.config.db_url, ready="DONE")
    assert other.wait() == 0
    assert guard.admit_order() is True


OPERATION_THEN_EXIT = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    with guard.operation("restore", timeout=0) as verdict:
        assert verdict.allowed
    guard.close()
    print("DONE", flush=True)
"""


def test_operation_yields_the_verdict_and_blocks_own_bot_side(guard):
    with guard.operation("vacuum") as verdict:
        assert verdict.operation is Operation.VACUUM
        assert verdict.allowed
        assert not verdict.forced
        assert guard.lease.holding_exclusive
        assert guard.admit_order() is False  # maintenance, even for this process
    assert guard.admit_order() is True


def test_operation_refused_while_this_process_has_orders(guard):
    guard.admit_order()
    guard.order_event("5", "submitted")
    with pytest.raises(VetoedError) as info:
        _fail_inside(guard, "restore")
    assert info.value.exit_code == 3
    assert "orders-in-flight" in _codes(info.value.verdict)
    assert not guard.lease.holding_exclusive


def test_second_operation_in_another_process_is_refused(spawn, scripts, guard, db_url):
    first = spawn(scripts["operation_holder"], db_url, "restore")
    with pytest.raises(VetoedError) as info:
        _fail_inside(guard, "move")
    message = str(info.value)
    assert "restore in progress" in message
    assert f"pid {first.pid}" in message
    (reason,) = info.value.verdict.reasons
    assert reason.code == "operation-in-progress"
    assert reason.details == {"pid": first.pid, "host": reason.details["host"],
                              "operation": "restore"}
    assert not guard.lease.holding_exclusive
    first.send()
    first.expect("RELEASED")
    with guard.operation("move") as verdict:
        assert verdict.allowed


def test_operation_waits_within_its_timeout(spawn, scripts, guard, db_url, wait_until_waiting):
    first = spawn(scripts["operation_holder"], db_url, "restore")
    entered = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with guard.operation("vacuum", timeout=60):
                entered.set()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=second)
    worker.start()
    try:
        wait_until_waiting(worker, "take_exclusive")
        assert not entered.is_set()
        first.send()
        first.expect("RELEASED")
    finally:
        worker.join(timeout=60)
    assert errors == []
    assert entered.is_set()


# -- threads -------------------------------------------------------------------------------


def test_many_threads_leave_the_lease_released(guard, run_cli, db_url, state_dir):
    threads, per_thread = 8, 40
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    refused: list[str] = []

    def trade(thread: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(per_thread):
                oid = f"{thread}-{i}"
                if not guard.admit_order():
                    refused.append(oid)
                    continue
                guard.order_event(oid, "submitted", symbol="BTC/USDT", side="buy")
                guard.order_event(oid, "accepted")
                guard.order_event(oid, "partially_filled")
                guard.order_event(oid, "filled" if i % 3 else "cancelled")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=trade, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    assert refused == []

    snap = guard.state.snapshot()
    assert snap.orders == ()
    assert snap.admissions == 0
    assert snap.anomalies == {}
    assert not guard.lease.holding_orders
    assert list((state_dir / "holders").glob("bot-*.json")) == []

    other = run_cli("check", "restore", "--db", db_url, "--json")
    assert other.returncode == 0, other.stdout + other.stderr
    assert json.loads(other.stdout)["reasons"] == []


def test_lease_is_held_from_another_process_view_while_an_order_is_in_flight(
    guard, run_cli, db_url
):
    guard.admit_order()
    guard.order_event("77", "submitted", symbol="SOL/USDT", side="buy")
    guard.publish_status_now()
    seen = run_cli("check", "delete", "--db", db_url, "--json")
    assert seen.returncode == 3
    (reason,) = json.loads(seen.stdout)["reasons"]
    assert reason["details"]["pid"] == os.getpid()
    assert reason["details"]["orders"] == ["77 (SOL/USDT buy, submitted)"]
    guard.reconcile({})  # the host no longer lists it: it ended without a callback
    assert not guard.lease.holding_orders
    assert run_cli("check", "delete", "--db", db_url).returncode == 0


def test_close_gives_everything_back(make_guard, db_url):
    bot = make_guard()
    bot.start_session()
    bot.admit_order()
    bot.order_event("1", "submitted")
    bot.close()
    view = make_guard().lease.probe()
    assert view.orders_free
    assert view.session_free


# -- robustness ----------------------------------------------------------------------------


def _nested(guard: Guard) -> None:
    with guard.operation("vacuum"):
        pass


def test_nested_operation_does_not_end_the_outer_one(guard, run_cli, db_url):
    """An operation started inside another on the same guard must be refused (or nest);
    either way, leaving it must not end the outer operation's maintenance."""
    with guard.operation("restore"):
        with contextlib.suppress(VetoedError):
            _nested(guard)
        assert guard.lease.holding_exclusive, "the inner operation released the outer lease"
        other = run_cli("check", "move", "--db", db_url, "--json")
        assert other.returncode == 3, other.stdout
        reasons = json.loads(other.stdout)["reasons"]
        assert [r["details"].get("operation") for r in reasons] == ["restore"]
        assert reasons[0]["details"]["pid"] == os.getpid()


def test_failed_admit_order_gives_its_admission_back(guard, tmp_path, state_dir):
    target = tmp_path / "elsewhere"
    target.mkdir()
    state_dir.symlink_to(target)
    # A dbguard directory it refuses to use: the order is refused, nothing raised.
    assert guard.admit_order() is False
    # No order will be placed: this process must not report one "about to be placed".
    assert guard.state.snapshot().admissions == 0
    state_dir.unlink()
    assert guard.check("restore").allowed
