"""An admitted order has no id until the host submits it; from the moment of its
admission a veto in another process names it by pair and side, not as a lock "held by
another process that has not published its orders yet"."""

from __future__ import annotations

import json

from dbguard_plugin.events import OrderKind
from dbguard_plugin.state import TradingState

#: A bot that admitted two entries it has not submitted yet; exits on any stdin line.
PLACING = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    guard.start_session("S-placing")
    assert guard.admit_order(symbol="BTC/USDT", side="buy")
    assert guard.admit_order(symbol="ETH/USDT", side="long")
    guard.publish_status_now()
    print("READY", flush=True)
    sys.stdin.readline()
    guard.order_event("O-1", "submitted", symbol="BTC/USDT", side="buy")
    guard.publish_status_now()
    print("SUBMITTED", flush=True)
    sys.stdin.readline()
    guard.close()
"""


def test_a_veto_names_the_pair_and_side_of_an_admitted_order(spawn, run_cli, db_url) -> None:
    bot = spawn(PLACING, db_url)
    vetoed = run_cli("check", "restore", "--db", db_url, "--json")
    assert vetoed.returncode == 3, vetoed.stdout + vetoed.stderr
    reasons = [r for r in json.loads(vetoed.stdout)["reasons"]
               if r["code"] == "orders-in-flight"]
    assert [r["message"] for r in reasons] == [
        f"pid {bot.pid} is about to place 2 orders: BTC/USDT buy, ETH/USDT long"]
    human = run_cli("check", "restore", "--db", db_url)
    assert "has not published its orders" not in human.stderr + human.stdout

    bot.send("go")
    bot.expect("SUBMITTED")
    status = json.loads(run_cli("status", "--db", db_url, "--json").stdout)
    (holder,) = status["lease"]["holders"]
    assert [o["order_id"] for o in holder["orders_in_flight"]] == ["O-1"]
    vetoed = run_cli("check", "restore", "--db", db_url)
    assert "O-1 (BTC/USDT buy, submitted)" in vetoed.stdout + vetoed.stderr
    bot.send("exit")
    assert bot.wait() == 0


def test_a_submitted_order_uses_the_admission_for_its_own_pair() -> None:
    state = TradingState()
    state.admit("BTC/USDT buy")
    state.admit("ETH/USDT sell")
    state.record("O-2", OrderKind.SUBMITTED, "ETH/USDT", "sell", 0.0)
    assert state.snapshot().pending == ("BTC/USDT buy",)
    state.withdraw()
    snapshot = state.snapshot()
    assert snapshot.admissions == 0
    assert [order.order_id for order in snapshot.orders] == ["O-2"]
