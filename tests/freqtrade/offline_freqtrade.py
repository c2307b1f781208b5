"""Fixtures: the real FreqtradeBot in dry-run, offline: only the exchange's I/O is replaced.

Markets, candles, the order book and the ticker come from :class:`Market` (in
offline_exchange.py, shared with bench/freqtrade_loop.py), which a test moves; everything
else (the bot loop, the dry-run order engine, the strategy resolver, persistence on a
SQLite file under tmp_path) is freqtrade's own code, and dbguard is the real thing. Any
attempt to open a network connection fails the test.

The test modules load these fixtures with ``pytest_plugins`` (after skipping where
freqtrade is not installed). This is deliberately not a conftest.py: pytest imports
every conftest.py under the one module name ``conftest``, and the top-level tests import
helpers from ``conftest``, so a second one would take that name from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from offline_exchange import (
    PAIR,
    STRATEGIES,
    TIMEFRAME_MS,
    Market,
    bot_config,
    build_bot,
    patch_exchange,
    release_database,
)

__all__ = ["PAIR", "STRATEGIES", "TIMEFRAME_MS", "Market"]


@pytest.fixture
def market() -> Market:
    return Market()


@pytest.fixture
def offline_exchange(monkeypatch: pytest.MonkeyPatch, market: Market) -> Market:
    """Replace freqtrade's exchange I/O (and only that) with *market*."""
    patch_exchange(monkeypatch.setattr, market)
    return market


@pytest.fixture
def ft_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'user_data' / 'tradesv3.sqlite'}"


@pytest.fixture
def write_config(tmp_path: Path, ft_db_url: str) -> Callable[..., Path]:
    """Write a freqtrade config.json with a ``"dbguard"`` object; return its path."""

    def write(db_url: str | None = None, **dbguard: Any) -> Path:
        user_data = tmp_path / "user_data"
        user_data.mkdir(exist_ok=True)
        config = bot_config(user_data, db_url or ft_db_url,
                            dbguard={"environment": "testing", **dbguard})
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_bot(offline_exchange: Market) -> Iterator[Callable[[Path], Any]]:
    """Build the real FreqtradeBot from a config file, in dry-run; cleaned up at teardown."""
    bots: list[Any] = []

    def make(config_file: Path) -> Any:
        bot = build_bot(config_file)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        if getattr(bot.strategy, "cleaned_up", 1) == 0:
            bot.cleanup()
    release_database()
