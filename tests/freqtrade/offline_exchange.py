"""An offline exchange for the real FreqtradeBot: only the exchange's I/O is replaced.

Shared by the adapter's tests (through the fixtures in offline_freqtrade.py) and by
bench/freqtrade_loop.py, so the benchmark times the very bot the tests prove. Nothing
here imports pytest; freqtrade is imported only by :func:`patch_exchange`.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STRATEGIES = Path(__file__).resolve().parent / "strategies"
PAIR = "BTC/USDT"
TIMEFRAME_MS = 5 * 60 * 1000

#: A setattr-like callable: ``monkeypatch.setattr`` in the tests, ``setattr`` in a bench.
Patch = Callable[[Any, str, Any], None]


def market_of(pair: str) -> dict[str, Any]:
    """A spot market as ccxt describes one, for *pair* ("BASE/QUOTE")."""
    base, quote = pair.split("/")
    return {
        "id": f"{base}{quote}", "symbol": pair, "base": base, "quote": quote, "settle": None,
        "baseId": base, "quoteId": quote, "settleId": None, "type": "spot", "spot": True,
        "margin": False, "swap": False, "future": False, "option": False, "active": True,
        "contract": False, "linear": None, "inverse": None, "contractSize": None,
        "taker": 0.001, "maker": 0.001,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {
            "amount": {"min": 0.00001, "max": 9000.0},
            "price": {"min": 0.01, "max": 1_000_000.0},
            "cost": {"min": 5.0, "max": 9_000_000.0},
            "leverage": {"min": None, "max": None},
        },
        "info": {},
    }


class Market:
    """The exchange as the bot sees it: *pairs* at one *price*, a one-level order book.

    *wave* (a fraction of the price) gives the candles before the last one a swing, so
    indicators have something to compute; the last candle always closes at *price*.
    """

    def __init__(self, price: float = 100.0, pairs: Sequence[str] = (PAIR,),
                 wave: float = 0.0) -> None:
        self.price = price
        self.pairs = tuple(pairs)
        self.wave = wave

    @property
    def bid(self) -> float:
        return round(self.price * 0.9995, 2)

    @property
    def ask(self) -> float:
        return round(self.price * 1.0005, 2)

    def order_book(self, pair: str = PAIR) -> dict[str, Any]:
        return {"symbol": pair, "bids": [[self.bid, 5.0]], "asks": [[self.ask, 5.0]],
                "timestamp": None, "datetime": None, "nonce": None}

    def ticker(self, pair: str = PAIR) -> dict[str, Any]:
        return {"symbol": pair, "bid": self.bid, "ask": self.ask, "last": self.price,
                "close": self.price, "quoteVolume": 1e6, "baseVolume": 1e4}

    def candles(self) -> list[list[float]]:
        now_ms = int(time.time() * 1000)
        last = now_ms - now_ms % TIMEFRAME_MS
        rows = []
        for i in range(199, -1, -1):
            p = self.price * (1.0 + self.wave * math.sin(i / 6.0))
            rows.append([float(last - i * TIMEFRAME_MS), p, p * 1.001, p * 0.999, p, 10.0])
        return rows


def patch_exchange(patch: Patch, market: Market) -> None:
    """Replace freqtrade's exchange I/O (and only that) with *market*; refuse the network."""
    from freqtrade.exchange import Exchange

    markets = {pair: market_of(pair) for pair in market.pairs}

    async def reload_markets(self: Any, reload: bool = False) -> None:
        self._api_async.set_markets({pair: dict(m) for pair, m in markets.items()})

    async def candle_history(self: Any, pair: str, timeframe: str, candle_type: Any,
                             since_ms: int | None = None) -> Any:
        return pair, timeframe, candle_type, market.candles(), True

    patch(Exchange, "_api_reload_markets", reload_markets)
    patch(Exchange, "_async_get_candle_history", candle_history)
    patch(Exchange, "fetch_l2_order_book", lambda self, pair, limit=100: market.order_book(pair))
    patch(Exchange, "fetch_ticker", lambda self, pair: market.ticker(pair))
    if hasattr(Exchange, "check_time_offset"):  # newer freqtrade asks for the clock at start
        patch(Exchange, "check_time_offset", lambda self: None)

    def no_network(self: socket.socket, address: Any) -> None:
        raise OSError(f"the freqtrade bot runs offline here; something tried to reach {address}")

    patch(socket.socket, "connect", no_network)


def bot_config(user_data: Path, db_url: str, *, pairs: Sequence[str] = (PAIR,),
               strategy: str = "GuardedStrategy", max_open_trades: int = 1,
               dbguard: dict[str, Any] | None = None) -> dict[str, Any]:
    """A dry-run freqtrade config.json for the offline exchange, with a ``"dbguard"``
    object (omitted when *dbguard* is None)."""
    config: dict[str, Any] = {
        "max_open_trades": max_open_trades,
        "stake_currency": "USDT",
        "stake_amount": 100,
        "tradable_balance_ratio": 0.99,
        "fiat_display_currency": "",
        "dry_run": True,
        "dry_run_wallet": 1000 * max(1, max_open_trades),
        "cancel_open_orders_on_exit": False,
        "trading_mode": "spot",
        "timeframe": "5m",
        "fee": 0.001,
        "unfilledtimeout": {"entry": 600, "exit": 600, "unit": "minutes"},
        "entry_pricing": {"price_side": "other", "use_order_book": True,
                          "order_book_top": 1, "price_last_balance": 0.0,
                          "check_depth_of_market": {"enabled": False,
                                                    "bids_to_ask_delta": 1}},
        "exit_pricing": {"price_side": "other", "use_order_book": True,
                         "order_book_top": 1},
        "exchange": {"name": "binance", "key": "", "secret": "",
                     "pair_whitelist": list(pairs), "pair_blacklist": [],
                     "enable_ws": False, "ccxt_config": {}, "ccxt_async_config": {}},
        "pairlists": [{"method": "StaticPairList"}],
        "bot_name": "dbguard-test",
        "initial_state": "running",
        "internals": {"process_throttle_secs": 5},
        "user_data_dir": str(user_data),
        "strategy": strategy,
        "strategy_path": str(STRATEGIES),
        "db_url": db_url,
    }
    if dbguard is not None:
        config["dbguard"] = dbguard
    return config


def build_bot(config_file: Path) -> Any:
    """The real FreqtradeBot from a config file, in dry-run, started and running."""
    from freqtrade.configuration import Configuration
    from freqtrade.enums import RunMode, State
    from freqtrade.freqtradebot import FreqtradeBot

    config = Configuration({"config": [str(config_file)]}, RunMode.DRY_RUN).get_config()
    bot = FreqtradeBot(config)
    bot.startup()
    bot.state = State.RUNNING
    return bot


def release_database() -> None:
    """Drop freqtrade's process-wide session and engine (after ``bot.cleanup()``)."""
    from freqtrade.persistence import Trade

    if hasattr(Trade, "session"):
        engine = Trade.session.get_bind()
        Trade.session.remove()
        engine.dispose()
