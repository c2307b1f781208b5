"""A small freqtrade strategy for the adapter's tests, and the same strategy guarded.

The test steers it through attributes: whether the last candle signals an entry or an
exit, the entry price (below the market leaves a limit order open), and whether open
entries have timed out. Its own callbacks record what the bot let it see, so a test can
tell what the strategy observed from what dbguard did.

BenchStrategy, timed by bench/freqtrade_loop.py, adds common TA-Lib indicators (EMAs,
RSI, MACD, Bollinger bands, ATR, ADX) and enters every pair: even-numbered pairs of the
whitelist at the market (the dry-run engine fills them), odd-numbered ones far below it
(the limit order stays open, as a resting order does on a real exchange).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import talib.abstract as ta
from freqtrade.persistence import Trade
from freqtrade.strategy import IStrategy
from pandas import DataFrame

from dbguard_plugin.hosts.freqtrade import DbGuardMixin


class PlainStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "5m"
    minimal_roi = {"0": 100.0}  # noqa: RUF012 - freqtrade reads these class attributes
    stoploss = -0.99
    process_only_new_candles = False
    use_exit_signal = True
    startup_candle_count = 0
    order_types = {  # noqa: RUF012
        "entry": "limit",
        "exit": "limit",
        "stoploss": "limit",
        "stoploss_on_exchange": False,
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.want_entry = False
        self.want_exit = False
        self.entry_price: float | None = None
        self.time_out_entries = False
        self.allow_entries = True
        self.started = 0
        self.cleaned_up = 0
        self.entry_questions = 0
        #: Open trade ids the strategy's own bot_loop_start saw, one list per loop.
        self.loops_saw: list[list[int]] = []

    def bot_start(self, **kwargs: Any) -> None:
        self.started += 1

    def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None:
        self.loops_saw.append(sorted(trade.id for trade in Trade.get_open_trades()))

    def ft_bot_cleanup(self) -> None:
        self.cleaned_up += 1
        super().ft_bot_cleanup()

    def populate_indicators(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        dataframe["enter_long"] = 1 if self.want_entry else 0
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        dataframe["exit_long"] = 1 if self.want_exit else 0
        return dataframe

    def custom_entry_price(self, pair: str, trade: Trade | None, current_time: datetime,
                           proposed_rate: float, entry_tag: str | None, side: str,
                           **kwargs: Any) -> float:
        return self.entry_price if self.entry_price is not None else proposed_rate

    def confirm_trade_entry(self, pair: str, order_type: str, amount: float, rate: float,
                            time_in_force: str, current_time: datetime,
                            entry_tag: str | None, side: str, **kwargs: Any) -> bool:
        self.entry_questions += 1
        return self.allow_entries

    def check_entry_timeout(self, pair: str, trade: Trade, order: Any, current_time: datetime,
                            **kwargs: Any) -> bool:
        return self.time_out_entries


class GuardedStrategy(DbGuardMixin, PlainStrategy):
    pass


class BenchStrategy(PlainStrategy):
    process_only_new_candles = True

    def populate_indicators(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        for period in (9, 21, 50, 100):
            dataframe[f"ema_{period}"] = ta.EMA(dataframe, timeperiod=period)
        dataframe["rsi"] = ta.RSI(dataframe, timeperiod=14)
        macd = ta.MACD(dataframe)
        dataframe["macd"] = macd["macd"]
        dataframe["macdsignal"] = macd["macdsignal"]
        bands = ta.BBANDS(dataframe, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
        dataframe["bb_lower"] = bands["lowerband"]
        dataframe["bb_upper"] = bands["upperband"]
        dataframe["atr"] = ta.ATR(dataframe, timeperiod=14)
        dataframe["adx"] = ta.ADX(dataframe, timeperiod=14)
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict[str, Any]) -> DataFrame:
        dataframe["enter_long"] = 1 if self.want_entry else 0
        # a condition on the indicators, as a real strategy has (true on these candles)
        dataframe.loc[dataframe["rsi"] > 100, "enter_long"] = 0
        return dataframe

    def custom_entry_price(self, pair: str, trade: Trade | None, current_time: datetime,
                           proposed_rate: float, entry_tag: str | None, side: str,
                           **kwargs: Any) -> float:
        whitelist = self.dp.current_whitelist() if self.dp else [pair]
        resting = pair in whitelist and whitelist.index(pair) % 2 == 1
        return round(proposed_rate * 0.98, 2) if resting else proposed_rate


class GuardedBenchStrategy(DbGuardMixin, BenchStrategy):
    pass
