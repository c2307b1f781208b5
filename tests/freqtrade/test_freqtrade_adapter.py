"""The freqtrade adapter against the real FreqtradeBot in dry-run.

Only the exchange's I/O is replaced (offline_freqtrade.py); the bot loop, the dry-run order
engine, freqtrade's persistence on a SQLite file and dbguard are all real. The operator
is a separate process (``python -m dbguard_plugin ...``), as in production.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runs import Cli

# Not "freqtrade": tests/ is on sys.path, so where freqtrade is not installed this very
# directory would import as a namespace package of that name.
pytest.importorskip("freqtrade.freqtradebot", reason="freqtrade is not installed")

pytest_plugins = ["offline_freqtrade"]  # the offline exchange and the bot fixtures

pytestmark = [
    # freqtrade 2026.9 calls DataFrame.drop(inplace=...), which pandas 3.1 deprecates:
    # not ours to fix, and not what these tests are about.
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]

from freqtrade.persistence import Order, Trade, init_db  # noqa: E402
from sqlalchemy import select  # noqa: E402

from dbguard_plugin import Guard  # noqa: E402
from dbguard_plugin.catalog.manifest import Manifest  # noqa: E402
from dbguard_plugin.hosts import freqtrade as adapter  # noqa: E402
from dbguard_plugin.hosts.freqtrade_config import settings  # noqa: E402
from dbguard_plugin.operations.profile_store import ProfileStore  # noqa: E402
from dbguard_plugin.settings.config import Config  # noqa: E402
from dbguard_plugin.settings.profiles import Profile  # noqa: E402
from dbguard_plugin.status import status_path  # noqa: E402


def check_restore(run_cli: Cli, url: str, config: Path) -> tuple[int, dict[str, Any]]:
    """``dbguard check restore`` from another process, as an operator runs it."""
    proc = run_cli("check", "restore", "--db", url, "--config", str(config), "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def reasons(verdict: dict[str, Any]) -> str:
    found = verdict.get("reasons") or verdict.get("verdict", {}).get("reasons", [])
    return "\n".join(reason["message"] for reason in found)


def open_orders() -> list[Order]:
    return list(Order.get_open_orders())


def trades_in(url: str) -> list[tuple[Any, ...]]:
    """Every trade and its orders, read through freqtrade's own init_db and models."""
    init_db(url)
    try:
        return [
            (t.id, t.pair, t.is_open, t.amount, t.open_rate, t.close_rate,
             sorted((o.order_id, o.ft_order_side, o.status, o.filled) for o in t.orders))
            for t in Trade.session.scalars(select(Trade).order_by(Trade.id)).all()
        ]
    finally:
        engine = Trade.session.get_bind()
        Trade.session.remove()
        engine.dispose()


def live_trades() -> list[tuple[Any, ...]]:
    """The same view as :func:`trades_in`, through the running bot's own session."""
    return [
        (t.id, t.pair, t.is_open, t.amount, t.open_rate, t.close_rate,
         sorted((o.order_id, o.ft_order_side, o.status, o.filled) for o in t.orders))
        for t in Trade.session.scalars(select(Trade).order_by(Trade.id)).all()
    ]


def backups(config: Path, reason: str) -> list[Manifest]:
    guard = Guard(Config.load(config))
    try:
        return [m for m in guard.catalog.manifests() if m.reason == reason]
    finally:
        guard.close()


def opened_copy(config: Path, manifest: Manifest, tmp_path: Path) -> str:
    """A copy of a backup, so freqtrade's init_db never writes into the catalog."""
    guard = Guard(Config.load(config))
    try:
        source = guard.catalog.data_path(manifest)
    finally:
        guard.close()
    assert manifest.compression == "none"
    copy = tmp_path / f"opened-{manifest.id}.sqlite"
    shutil.copyfile(source, copy)
    return f"sqlite:///{copy}"


# -- an order in flight vetoes a restore; the fill lifts the veto ---------------------------


def test_open_limit_entry_vetoes_restore_until_the_dry_run_fill(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], market: Any,
    ft_db_url: str, run_cli: Cli,
) -> None:
    config = write_config()
    bot = make_bot(config)
    strategy = bot.strategy
    strategy.want_entry = True
    strategy.entry_price = 95.0  # below the bid: the dry-run limit order waits

    bot.process()
    [order] = open_orders()
    assert order.ft_order_side == "buy"
    assert order.status == "open"
    limit = order.price  # freqtrade keeps a custom price within 2 % of the market
    assert limit < market.bid
    # Between the loop that placed it and the next one, the admission already vetoes,
    # and names the entry by its pair and side (it has no order id in dbguard yet).
    code, verdict = check_restore(run_cli, ft_db_url, config)
    assert code == 3, verdict
    assert "about to place an order: BTC/USDT long" in reasons(verdict)
    assert "has not published its orders" not in reasons(verdict)

    bot.process()  # bot_loop_start reconciles: the order is tracked by its own id
    code, verdict = check_restore(run_cli, ft_db_url, config)
    assert code == 3, verdict
    assert order.order_id in reasons(verdict)
    assert "BTC/USDT buy" in reasons(verdict)
    # the adapter's own per-loop query reads what Order.get_open_orders() returns
    assert adapter._open_orders() == {order.order_id: ("BTC/USDT", "buy")}

    market.price = limit * 0.98  # the ask falls through the limit: the dry-run engine fills
    bot.process()
    assert open_orders() == []
    [trade] = Trade.get_open_trades()
    assert trade.open_rate == pytest.approx(limit)
    code, verdict = check_restore(run_cli, ft_db_url, config)
    assert code == 0, verdict
    assert verdict["allowed"] is True
    assert strategy.dbguard.state.snapshot().busy is False


# -- session boundaries are backed up, and freqtrade can open the backups -------------------


def test_start_and_cleanup_backups_open_with_init_db_and_hold_the_same_trades(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], market: Any,
    ft_db_url: str, tmp_path: Path,
) -> None:
    config = write_config()
    first = make_bot(config)
    first.strategy.want_entry = True
    first.process()  # an entry, filled at the ask: trade 1 is open
    first.strategy.want_entry = False
    first.process()
    ended_with = live_trades()
    assert [t[2] for t in ended_with] == [True]
    first.cleanup()
    assert first.strategy.cleaned_up == 1

    second = make_bot(config)  # the same database: its session-start backup has trade 1
    started_with = live_trades()
    second.strategy.want_exit = True
    market.price = 101.0
    second.process()  # trade 1 exits, filled at the bid
    assert [t[2] for t in live_trades()] == [False]
    second.cleanup()

    [start_1, start_2] = backups(config, "session-start")
    [end_1, end_2] = backups(config, "session-end")
    assert start_1.created_ts < end_1.created_ts < start_2.created_ts < end_2.created_ts
    assert trades_in(opened_copy(config, start_1, tmp_path)) == []
    assert trades_in(opened_copy(config, end_1, tmp_path)) == ended_with
    assert trades_in(opened_copy(config, start_2, tmp_path)) == started_with == ended_with
    final = trades_in(ft_db_url)
    assert [t[2] for t in final] == [False]
    assert trades_in(opened_copy(config, end_2, tmp_path)) == final


# -- a restore while the bot runs: the next loop reads the restored rows --------------------


def test_restore_while_the_bot_runs_is_seen_on_the_next_loop(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], market: Any,
    run_cli: Cli, caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config()
    bot = make_bot(config)
    strategy = bot.strategy
    strategy.want_entry = True
    bot.process()  # trade 1 opens, filled at once: nothing in flight
    strategy.want_entry = False
    bot.process()
    assert strategy.loops_saw[-1] == [1]

    made = run_cli("backup", "--config", str(config), "--json")
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]

    strategy.want_exit = True
    bot.process()  # trade 1 exits, filled at once
    strategy.want_exit = False
    assert Trade.get_open_trades() == []

    restored = run_cli("restore", backup_id, "--yes", "--config", str(config), "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr

    with caplog.at_level(logging.INFO, logger="dbguard_plugin"):
        bot.process()
    # The strategy's own bot_loop_start runs after dbguard's refresh: it sees trade 1 open.
    assert strategy.loops_saw[-1] == [1]
    [trade] = Trade.get_open_trades()
    assert trade.id == 1
    assert trade.is_open
    assert "freqtrade's sessions were refreshed" in caplog.text


# -- during a restore the entry is refused, and taken on a later loop -----------------------

RESTORE_AND_WAIT = """
    import sys
    from dbguard_plugin import Guard, signals
    from dbguard_plugin.settings.config import Config
    from dbguard_plugin.operations.restore import restore

    guard = Guard(Config.load(sys.argv[1]))

    def hold(sender, **extra):
        # the lease is exclusive and the safety backup is taken: the restore is running
        print("RESTORING", flush=True)
        sys.stdin.readline()

    signals.restore_started.connect(hold, weak=False)
    restore(guard, sys.argv[2])
    print("RESTORED", flush=True)
    guard.close()
"""


def test_entry_is_refused_during_a_restore_and_taken_on_a_later_loop(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any],
    spawn: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config()
    bot = make_bot(config)
    strategy = bot.strategy
    [start] = backups(config, "session-start")
    strategy.want_entry = True

    operator = spawn(RESTORE_AND_WAIT, str(config), start.id, ready="RESTORING")
    with caplog.at_level(logging.INFO):
        bot.process()
    assert strategy.entry_questions == 1  # the strategy said yes; dbguard said not now
    assert Trade.get_open_trades() == []
    assert open_orders() == []
    assert "postponed" in caplog.text
    assert "User denied entry for BTC/USDT" in caplog.text

    operator.send()
    operator.expect("RESTORED")
    assert operator.wait() == 0

    bot.process()
    assert strategy.entry_questions == 2
    [trade] = Trade.get_open_trades()
    assert trade.pair == "BTC/USDT"
    assert strategy.dbguard.state.snapshot().busy is False


# -- a cancelled (timed-out) entry is reconciled ---------------------------------------------


def test_timed_out_entry_is_reconciled(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], ft_db_url: str,
    run_cli: Cli,
) -> None:
    config = write_config()
    bot = make_bot(config)
    strategy = bot.strategy
    strategy.want_entry = True
    strategy.entry_price = 95.0
    bot.process()
    strategy.want_entry = False
    bot.process()
    [in_flight] = strategy.dbguard.state.snapshot().orders
    [order] = open_orders()
    assert in_flight.order_id == order.order_id

    strategy.time_out_entries = True
    bot.process()  # freqtrade cancels the entry; without a fill it deletes the trade
    assert Trade.session.scalars(select(Trade)).all() == []
    bot.process()  # no callback for that: the next loop's reconcile sees it

    snapshot = strategy.dbguard.state.snapshot()
    assert snapshot.orders == ()
    assert snapshot.admissions == 0
    assert snapshot.anomalies.get("reconciled") == 1
    code, verdict = check_restore(run_cli, ft_db_url, config)
    assert code == 0, verdict


# -- a loop in which nothing changed writes nothing ------------------------------------------


def test_a_quiet_loop_leaves_the_status_file_alone(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any],
) -> None:
    bot = make_bot(write_config())
    strategy = bot.strategy
    strategy.want_entry = True
    strategy.entry_price = 95.0  # the limit order rests: an order in flight
    bot.process()
    strategy.want_entry = False
    bot.process()
    guard = strategy.dbguard
    guard.publish_status_now()  # nothing left pending in the status thread
    status = status_path(guard.lease.holders_dir, "bot")
    before = status.stat()

    bot.process()
    bot.process()
    publisher = guard.trading.publisher
    with publisher._lock:  # a write the status thread had begun is finished by now
        pending = publisher._wake.is_set()
        after = status.stat()
    assert not pending
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    [order] = open_orders()
    assert [o.order_id for o in guard.state.snapshot().orders] == [order.order_id]
    assert order.order_id in status.read_text(encoding="utf-8")

    strategy.time_out_entries = True
    bot.process()  # freqtrade cancels the entry; the next loop's reconcile sees it
    bot.process()
    assert guard.state.snapshot().busy is False
    assert order.order_id not in status.read_text(encoding="utf-8")


# -- the active environment profile: the bot and the CLI agree ------------------------------


def test_the_bot_applies_the_active_profile_as_the_cli_does(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], ft_db_url: str,
    tmp_path: Path, run_cli: Cli, caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config()  # the config file says "testing"; the profile says otherwise
    store = ProfileStore.locate(config)
    store.create(Profile("paper", kind="development", db_url=ft_db_url))
    store.switch("paper")

    bot = make_bot(config)
    guard = bot.strategy.dbguard
    assert (guard.config.profile, guard.config.environment) == ("paper", "development")
    assert guard.location.redacted == f"sqlite:///{tmp_path / 'user_data' / 'tradesv3.sqlite'}"
    # The operator's CLI, in another process, resolves the same config file the same way
    # and finds the bot's session-start backup in the profile's own catalog.
    status = run_cli("status", "--config", str(config), "--json")
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert seen["environment"] == "development"
    assert seen["database"] == guard.location.redacted
    assert seen["backups"] == str(guard.catalog.directory)
    assert guard.catalog.directory.name == "backups-paper"
    listed = run_cli("backups", "--config", str(config), "--json")
    assert [row["reason"] for row in json.loads(listed.stdout)] == ["session-start"]

    # A profile for another database is left out, as the CLI leaves it out for --db of
    # another database; the log names both, and freqtrade's database is the one guarded.
    other = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    store.update("paper", db_url=other)
    ft_config = {"config_files": [str(config)], "db_url": ft_db_url,
                 "dbguard": {"environment": "testing"}}
    with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
        alone = settings(ft_config)
    assert (alone.db_url, alone.profile, alone.environment) == (ft_db_url, "", "testing")
    assert "the active profile 'paper'" in caplog.text
    assert f"is for {other}, but freqtrade writes {ft_db_url}" in caplog.text
