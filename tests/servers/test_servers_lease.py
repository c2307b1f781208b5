"""The lease on the server, between real processes on their own connections."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.servers

#: An operator process: "BACKUP" takes a backup, "RESTORE <id>" restores one; it prints
#: BACKUP <id>, RESTORED <id> or VETOED <json message>. argv: db_url
OPERATOR = """
    import json, sys
    from dbguard_plugin import Guard
    from dbguard_plugin.errors import VetoedError
    from dbguard_plugin.operations.restore import restore

    guard = Guard(db_url=sys.argv[1])
    print("READY", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "BACKUP":
            print("BACKUP " + guard.backup("manual").id, flush=True)
        elif command == "RESTORE":
            try:
                outcome = restore(guard, arg)
            except VetoedError as exc:
                print("VETOED " + json.dumps(str(exc)), flush=True)
            else:
                print("RESTORED " + outcome.backup_id, flush=True)
"""


def wait_for_free_lease(guard, timeout=60.0):
    """A killed holder's server session ends a moment after its process: wait, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        view = guard.lease.probe()
        if view.orders_free and view.session_free:
            return
        assert time.monotonic() < deadline, f"the lease stayed held: {view}"
        time.sleep(0.01)


def test_restore_is_refused_naming_both_bots_and_proceeds_after_they_are_killed(
        server_db, server_guards, spawn, scripts):
    server_db.run("CREATE TABLE trades (id integer PRIMARY KEY)")
    server_db.run("INSERT INTO trades (id) VALUES (1), (2)")
    operator = spawn(OPERATOR, server_db.url)
    operator.send("BACKUP")
    backup_id = operator.expect("BACKUP ").split()[1]

    bots = [spawn(scripts["bot_with_orders"], server_db.url) for _ in range(2)]
    operator.send(f"RESTORE {backup_id}")
    message = json.loads(operator.expect("VETOED ")[len("VETOED "):])

    for bot in bots:
        assert f"2 orders in flight in pid {bot.pid}: A-1001 (BTC/USDT buy, submitted), " \
               f"B-2002 (ETH/USDT sell, submitted)" in message, message
    assert all(f"session S-7 in pid {bot.pid}" in message for bot in bots), message

    for bot in bots:
        bot.kill()
    wait_for_free_lease(server_guards(server_db.url))
    server_db.run("INSERT INTO trades (id) VALUES (3)")
    operator.send(f"RESTORE {backup_id}")
    assert operator.expect("RESTORED ") == f"RESTORED {backup_id}"
    assert [r[0] for r in server_db.run("SELECT id FROM trades ORDER BY id")] == [1, 2]


def test_an_operation_puts_bots_on_other_connections_in_maintenance(
        server_db, server_guards, spawn, scripts):
    operator = spawn(scripts["operation_holder"], server_db.url, "restore")
    bot = server_guards(server_db.url)
    bot.start_session("S-1")

    assert not bot.admit_order(timeout=0)
    view = bot.lease.probe()
    assert [(h.role, h.pid, h.operation) for h in view.others()] == [
        ("operation", operator.pid, "restore")]

    operator.kill()  # SIGKILL: its server session, and its lock, end with it
    assert bot.admit_order(timeout=60)
    bot.order_event("A-1", "submitted", symbol="BTC/USDT", side="buy")
    assert not bot.lease.probe().orders_free


def test_bots_share_the_lease_and_an_operation_waits_for_all_of_them(
        server_db, server_guards):
    first, second, operator = (server_guards(server_db.url) for _ in range(3))
    for bot, oid in ((first, "A-1"), (second, "B-2")):
        assert bot.admit_order(timeout=0)
        bot.order_event(oid, "submitted", symbol="BTC/USDT", side="buy")
    assert not operator.lease.take_exclusive(0)

    first.order_event("A-1", "filled")
    assert not operator.lease.take_exclusive(0)  # the second bot still has one in flight
    second.order_event("B-2", "cancelled")
    assert operator.lease.take_exclusive(0)
    assert not first.admit_order(timeout=0)  # maintenance while the operation holds it
    operator.lease.release_exclusive()
    assert first.admit_order(timeout=0)


def test_databases_on_one_server_have_separate_leases(make_server_db, server_guards):
    for kind in ("postgresql", "mariadb"):
        one, two = make_server_db(kind), make_server_db(kind)
        bot = server_guards(one.url)
        assert bot.admit_order(timeout=0)
        bot.order_event("A-1", "submitted")
        assert server_guards(two.url).lease.take_exclusive(0)
        assert not server_guards(one.url).lease.take_exclusive(0)
