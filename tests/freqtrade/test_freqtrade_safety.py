"""The adapter never hurts the bot: dbguard's failures are logged, never raised into
freqtrade; it stays out of non-trading run modes; it notices a new database after a
config reload; and a maintenance lease postpones exits as well as entries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Not "freqtrade": tests/ is on sys.path, so where freqtrade is not installed this very
# directory would import as a namespace package of that name.
pytest.importorskip("freqtrade.freqtradebot", reason="freqtrade is not installed")

pytest_plugins = ["offline_freqtrade"]  # the offline exchange and the bot fixtures

pytestmark = [
    # freqtrade 2026.9 calls DataFrame.drop(inplace=...), which pandas 3.1 deprecates.
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame"),
]

from freqtrade.persistence import Trade  # noqa: E402

from dbguard_plugin.errors import DbGuardError  # noqa: E402


def test_a_bad_dbguard_setting_is_logged_and_the_bot_trades_without_dbguard(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config(environment="staging")
    with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
        bot = make_bot(config)
    assert bot.strategy.dbguard is None
    assert "dbguard: starting the session failed" in caplog.text
    assert "dbguard.environment = 'staging' is invalid" in caplog.text
    assert str(config) in caplog.text
    bot.strategy.want_entry = True
    bot.process()
    assert len(Trade.get_open_trades()) == 1


def test_a_failing_guard_is_logged_and_the_bot_carries_on(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    bot = make_bot(write_config())
    guard = bot.strategy.dbguard

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DbGuardError("/state/lease: injected failure")

    # fault injection on the guard's methods: the adapter's containment is under test
    for name in ("tick", "admit_order", "order_event", "end_session"):
        monkeypatch.setattr(guard, name, broken)
    bot.strategy.want_entry = True
    with caplog.at_level(logging.ERROR, logger="dbguard_plugin"):
        bot.process()
        bot.cleanup()
    assert len(Trade.get_open_trades()) == 1  # the entry went through
    for what in ("the loop's reconcile", "admitting the long entry on BTC/USDT",
                 "reporting a fill", "ending the session"):
        assert f"dbguard: {what} failed (DbGuardError: /state/lease: injected failure)" \
            in caplog.text
    assert bot.strategy.cleaned_up == 1


def test_disabled_dbguard_stays_out_of_the_way(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], ft_db_url: str,
) -> None:
    bot = make_bot(write_config(enabled=False))
    assert bot.strategy.dbguard is None
    bot.strategy.want_entry = True
    bot.process()
    assert len(Trade.get_open_trades()) == 1
    assert not Path(ft_db_url.removeprefix("sqlite:///") + ".dbguard").exists()


def test_backtesting_loads_the_strategy_without_a_guard(
    write_config: Callable[..., Path], offline_exchange: Any, ft_db_url: str,
) -> None:
    from freqtrade.configuration import Configuration
    from freqtrade.enums import RunMode
    from freqtrade.resolvers import StrategyResolver

    config = Configuration({"config": [str(write_config())]}, RunMode.BACKTEST).get_config()
    strategy = StrategyResolver.load_strategy(config)
    strategy.ft_bot_start()
    strategy.ft_bot_cleanup()
    assert strategy.started == 1  # the user's bot_start still runs
    assert strategy.dbguard is None
    assert not Path(ft_db_url.removeprefix("sqlite:///") + ".dbguard").exists()


def test_a_new_db_url_after_a_config_reload_is_noticed(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_bot(write_config())
    first.cleanup()  # what freqtrade's reload does first: clean up, then build a new bot
    moved = tmp_path / "user_data" / "tradesv3-new.sqlite"
    with caplog.at_level(logging.WARNING, logger="dbguard_plugin"):
        second = make_bot(write_config(db_url=f"sqlite:///{moved}"))
    assert "dbguard: db_url changed after a config reload" in caplog.text
    assert f"now sqlite:///{moved}" in caplog.text
    guard = second.strategy.dbguard
    assert guard.location.sqlite_path == moved
    assert [m.reason for m in guard.catalog.manifests()] == ["session-start"]


#: An operator inside ``guard.operation("restore")`` for the bot's config file; prints
#: READY, leaves on a stdin line and prints RELEASED. argv: config path
HOLD_THE_LEASE = """
    import sys
    from dbguard_plugin import Guard
    from dbguard_plugin.settings.config import Config

    guard = Guard(Config.load(sys.argv[1]))
    with guard.operation("restore"):
        print("READY", flush=True)
        sys.stdin.readline()
    print("RELEASED", flush=True)
    guard.close()
"""


def test_an_exit_waits_while_an_operation_holds_the_lease(
    write_config: Callable[..., Path], make_bot: Callable[[Path], Any],
    spawn: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    config = write_config()
    bot = make_bot(config)
    strategy = bot.strategy
    strategy.want_entry = True
    bot.process()
    strategy.want_entry = False
    strategy.want_exit = True

    holder = spawn(HOLD_THE_LEASE, str(config))
    with caplog.at_level(logging.INFO):
        bot.process()
    assert len(Trade.get_open_trades()) == 1  # the exit was postponed
    assert "dbguard: exit (exit_signal) on BTC/USDT postponed" in caplog.text
    assert "User denied exit for BTC/USDT" in caplog.text

    holder.send()
    holder.expect("RELEASED")
    assert holder.wait() == 0
    bot.process()
    assert Trade.get_open_trades() == []
    assert strategy.dbguard.state.snapshot().busy is False
