"""The cross-process lease: real processes, real flock locks, SIGKILL crashes."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from dbguard_plugin import Guard
from dbguard_plugin.errors import UnsafePathError, VetoedError

ORDER_IDS = ("A-1001", "B-2002")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _bot_status_files(state_dir: Path, pid: int) -> list[Path]:
    return [p for p in (state_dir / "holders").glob("bot-*.json") if p.stem.endswith(f"-{pid}")]


# -- a bot with orders in flight, seen from a third process ----------------------------------


def test_orders_in_flight_veto_names_orders_and_pid_then_sigkill_frees(
    spawn, scripts, run_cli, db_url, state_dir
):
    holder = spawn(scripts["bot_with_orders"], db_url)

    human = run_cli("check", "restore", "--db", db_url)
    assert human.returncode == 3, human.stderr
    assert "restore: vetoed" in human.stdout
    for oid in ORDER_IDS:
        assert oid in human.stdout
    assert f"pid {holder.pid}" in human.stdout

    as_json = run_cli("check", "restore", "--db", db_url, "--json")
    assert as_json.returncode == 3, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["allowed"] is False
    in_flight = [r for r in data["reasons"] if r["code"] == "orders-in-flight"]
    assert len(in_flight) == 1
    reason = in_flight[0]
    assert reason["overridable"] is False
    assert reason["details"]["pid"] == holder.pid
    orders = reason["details"]["orders"]
    assert len(orders) == 2
    for oid in ORDER_IDS:
        assert any(order.startswith(oid) for order in orders), orders
    # The holder also has a session, which production vetoes for a restore as well.
    assert "session-active" in {r["code"] for r in data["reasons"]}
    assert _bot_status_files(state_dir, holder.pid), "the holder published no status file"

    holder.kill()  # SIGKILL + waitpid: no cleanup code of the holder ran

    after = run_cli("check", "restore", "--db", db_url)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "restore: allowed" in after.stdout
    after_json = run_cli("check", "restore", "--db", db_url, "--json")
    assert after_json.returncode == 0
    assert json.loads(after_json.stdout)["reasons"] == []
    # The dead holder's status file explained nothing and was removed by the free probe.
    assert _bot_status_files(state_dir, holder.pid) == []


def test_sigkilled_bot_does_not_block_a_new_operation(spawn, scripts, make_guard, db_url):
    holder = spawn(scripts["bot_with_orders"], db_url)
    guard = make_guard()
    with pytest.raises(VetoedError, match=f"pid {holder.pid}"):
        _enter_operation(guard, "restore")
    holder.kill()
    with guard.operation("restore") as verdict:
        assert verdict.allowed
        assert verdict.reasons == ()


def _enter_operation(guard: Guard, operation: str) -> None:
    with guard.operation(operation):
        pass


# -- an operation holding the lease exclusive: maintenance mode ------------------------------


def test_operation_puts_bots_in_maintenance_and_vetoes_other_operators(
    spawn, scripts, run_cli, make_guard, db_url
):
    operation = spawn(scripts["operation_holder"], db_url, "restore")
    bot = make_guard()

    assert bot.admit_order() is False
    assert bot.state.busy is False, "a refused admission must be given back"
    assert bot.lease.holding_orders is False

    second = run_cli("check", "vacuum", "--db", db_url)
    assert second.returncode == 3, second.stderr
    assert "restore in progress" in second.stdout
    assert f"pid {operation.pid}" in second.stdout
    second_json = run_cli("check", "vacuum", "--db", db_url, "--json")
    assert second_json.returncode == 3
    reasons = json.loads(second_json.stdout)["reasons"]
    in_progress = [r for r in reasons if r["code"] == "operation-in-progress"]
    assert in_progress, reasons
    assert in_progress[0]["details"]["pid"] == operation.pid
    assert in_progress[0]["details"]["operation"] == "restore"

    operation.send("leave")
    operation.expect("RELEASED")
    operation.send("exit")
    assert operation.wait() == 0

    assert bot.admit_order() is True
    assert bot.lease.holding_orders is True
    bot.withdraw_admission()
    assert bot.lease.holding_orders is False


def test_sigkilled_operation_ends_maintenance(spawn, scripts, make_guard, db_url):
    operation = spawn(scripts["operation_holder"], db_url, "migrate")
    bot = make_guard()
    assert bot.admit_order() is False
    operation.kill()
    assert bot.admit_order() is True


def test_admit_order_waits_for_the_operation_within_its_timeout(
    spawn, scripts, make_guard, wait_until_waiting
):
    bot = make_guard()
    operation = spawn(scripts["operation_holder"], bot.config.db_url, "restore")
    assert bot.admit_order(timeout=0) is False

    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(bot.admit_order(timeout=60)))
    waiter.start()
    try:
        # Release only once the bot is really waiting inside the lease's retry loop.
        wait_until_waiting(waiter, "hold_orders")
        assert result == []
        operation.send("leave")
        operation.expect("RELEASED")
    finally:
        waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert result == [True]
    assert bot.lease.holding_orders is True


def test_admit_order_timeout_expires_while_the_operation_holds(spawn, scripts, make_guard):
    bot = make_guard()
    spawn(scripts["operation_holder"], bot.config.db_url, "restore")
    assert bot.admit_order(timeout=0.2) is False
    assert bot.state.snapshot().admissions == 0


# -- files: modes, the database never touched, symlinks refused -----------------------------


def test_lease_and_status_files_are_private(spawn, scripts, db_url, state_dir):
    holder = spawn(scripts["bot_with_orders"], db_url)
    assert _mode(state_dir) == 0o700
    assert _mode(state_dir / "holders") == 0o700
    assert _mode(state_dir / "lease") == 0o600
    assert _mode(state_dir / "session") == 0o600
    status_files = _bot_status_files(state_dir, holder.pid)
    assert len(status_files) == 1
    assert _mode(status_files[0]) == 0o600
    holder.send()
    assert holder.wait() == 0

    operation = spawn(OPERATION_STATUS_HOLDER, db_url)
    files = list((state_dir / "holders").glob(f"operation-*-{operation.pid}.json"))
    assert len(files) == 1
    assert _mode(files[0]) == 0o600
    assert json.loads(files[0].read_text())["operation"] == "vacuum"


OPERATION_STATUS_HOLDER = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard(db_url=sys.argv[1])
    with guard.operation("vacuum"):
        print("READY", flush=True)
        sys.stdin.readline()
"""


def test_the_lease_works_without_the_database_file(spawn, scripts, run_cli, db_url, db_path):
    assert not db_path.exists()
    holder = spawn(scripts["bot_with_orders"], db_url)
    checked = run_cli("check", "restore", "--db", db_url)
    assert checked.returncode == 3
    assert "A-1001" in checked.stdout
    holder.kill()
    assert run_cli("check", "restore", "--db", db_url).returncode == 0
    assert not db_path.exists(), "the lease created (so opened) the database file"


def _open_files(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    found = set()
    for fd in fd_dir.iterdir():
        try:
            found.add(os.readlink(fd))
        except FileNotFoundError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_holders_never_open_the_database_file(spawn, scripts, db_path, db_url, state_dir):
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        conn.commit()

    bot = spawn(scripts["bot_with_orders"], db_url)
    opened = _open_files(bot.pid)
    assert str(state_dir / "lease") in opened  # the listing does see the lease
    assert str(state_dir / "session") in opened
    assert not {p for p in opened if p.startswith(str(db_path) + "-") or p == str(db_path)}
    bot.send()
    assert bot.wait() == 0

    operation = spawn(scripts["operation_holder"], db_url, "restore")
    opened = _open_files(operation.pid)
    assert str(state_dir / "lease") in opened
    assert str(db_path) not in opened


def test_symlinked_state_dir_is_refused_by_a_bot(make_guard, tmp_path, state_dir, caplog):
    target = tmp_path / "elsewhere"
    target.mkdir()
    state_dir.symlink_to(target)
    guard = make_guard()
    # Host calls never raise (see "When dbguard cannot write"): the session starts
    # without the lease or a backup, no order is admitted, and the log says why.
    with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
        guard.start_session()
        assert guard.admit_order() is False
        guard.end_session()
    assert f"{state_dir} is a symlink" in caplog.text
    with pytest.raises(UnsafePathError, match="symlink"):
        _enter_operation(guard, "restore")
    assert list(target.iterdir()) == []


def test_symlinked_state_dir_is_refused_by_the_cli(run_cli, db_url, tmp_path, state_dir):
    target = tmp_path / "elsewhere"
    target.mkdir()
    state_dir.symlink_to(target)
    checked = run_cli("check", "restore", "--db", db_url)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "symlink" in checked.stderr
    assert list(target.iterdir()) == [], "dbguard wrote through the symlink"


def test_symlinked_lock_file_is_refused(make_guard, run_cli, db_url, tmp_path, state_dir):
    make_guard().lease.prepare()
    decoy = tmp_path / "decoy"
    decoy.write_text("not a lock\n")
    (state_dir / "lease").symlink_to(decoy)
    guard = make_guard()
    assert guard.admit_order() is False  # refused, not raised: nothing follows the link
    checked = run_cli("check", "restore", "--db", db_url)
    assert checked.returncode == 2
    assert "symlink" in checked.stderr
    assert decoy.read_text() == "not a lock\n"


def test_operator_check_creates_nothing_for_an_unguarded_database(run_cli, db_url, state_dir):
    checked = run_cli("check", "restore", "--db", db_url)
    assert checked.returncode == 0
    assert not state_dir.exists()


def test_probe_in_process_sees_other_process(spawn, scripts, make_guard: Callable[..., Guard]):
    guard = make_guard()
    holder = spawn(scripts["bot_with_orders"], guard.config.db_url)
    view = guard.lease.probe()
    assert view.orders_free is False
    assert view.session_free is False
    (other,) = view.others()
    assert other.pid == holder.pid
    assert other.role == "bot"
    assert [o["order_id"] for o in other.orders] == list(ORDER_IDS)
    holder.kill()
    view = guard.lease.probe()
    assert view.orders_free
    assert view.session_free
    assert view.others() == []
