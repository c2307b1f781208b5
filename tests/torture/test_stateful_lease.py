"""Two bots and two operators interleave at random (hypothesis, stateful).

All four are Guards on the same database file in this process. That is a faithful stand-in
for four processes: every lock is a ``flock`` taken through its own open file description
(lease.py opens the lock file afresh for each lock), and ``flock`` locks on separate open
file descriptions conflict even within one process. The invariants: a replacement (a real
restore, or an operation holding the lease across steps) never succeeds while any bot has
an order in flight, and no bot is admitted an order while an operation holds the lease.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from pathlib import Path

from harness import TALLY
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlite_files import content_digest, integrity

from dbguard_plugin import Guard
from dbguard_plugin.errors import VetoedError
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config

BOTS = st.sampled_from([0, 1])
OPERATORS = st.sampled_from([0, 1])


class TwoBotsTwoOperators(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dbguard-stateful-"))
        db = self.dir / "tradesv3.sqlite"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES ('x')", [()] * 50)
        conn.commit()
        conn.close()
        self.db = db
        # development: no session rule, so only orders and the lease decide
        config = Config(db_url=f"sqlite:///{db}", environment="development", keep_last=3,
                        keep_daily=0, keep_weekly=0, restore_check="quick_check")
        self.bots = [Guard(config), Guard(config)]
        self.operators = [Guard(config), Guard(config)]
        self.backup_id = self.operators[0].backup().id
        self.digest = content_digest(db)
        self.in_flight: list[set[str]] = [set(), set()]
        self.holding: list[contextlib.ExitStack | None] = [None, None]
        self.serial = 0

    def teardown(self) -> None:
        for stack in self.holding:
            if stack is not None:
                stack.close()
        for guard in self.bots + self.operators:
            guard.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _orders(self) -> bool:
        return any(self.in_flight)

    def _held_by(self, other_than: int | None = None) -> bool:
        return any(s is not None for i, s in enumerate(self.holding) if i != other_than)

    @rule(bot=BOTS)
    def place_order(self, bot: int) -> None:
        admitted = self.bots[bot].admit_order(timeout=0)
        # No order is accepted while an operation holds the lease, and one is whenever
        # none does (a bot's own orders never block its own or the other bot's).
        assert admitted is not self._held_by(), (admitted, self.holding)
        if admitted:
            self.serial += 1
            order = f"O-{self.serial}"
            self.bots[bot].order_event(order, "submitted", symbol="BTC/USDT", side="buy")
            self.in_flight[bot].add(order)

    @precondition(lambda self: any(self.in_flight))
    @rule(bot=BOTS, filled=st.booleans())
    def end_order(self, bot: int, filled: bool) -> None:
        if not self.in_flight[bot]:
            return
        order = sorted(self.in_flight[bot])[0]
        self.bots[bot].order_event(order, "filled" if filled else "cancelled")
        self.in_flight[bot].discard(order)

    @rule(operator=OPERATORS)
    def take_lease(self, operator: int) -> None:
        if self.holding[operator] is not None:
            return
        stack = contextlib.ExitStack()
        vetoed = ""
        try:
            stack.enter_context(self.operators[operator].operation("restore"))
        except VetoedError as exc:
            vetoed = str(exc)
        if vetoed:
            stack.close()
            assert self._orders() or self._held_by(operator), f"vetoed for nothing: {vetoed}"
            return
        assert not self._orders(), "an operation took the lease with orders in flight"
        assert not self._held_by(operator), "two operations hold the lease"
        self.holding[operator] = stack

    @precondition(lambda self: any(s is not None for s in self.holding))
    @rule(operator=OPERATORS)
    def release_lease(self, operator: int) -> None:
        stack, self.holding[operator] = self.holding[operator], None
        if stack is not None:
            stack.close()

    @rule(operator=OPERATORS)
    def restore_backup(self, operator: int) -> None:
        if self.holding[operator] is not None:
            return
        try:
            restore(self.operators[operator], self.backup_id)
        except VetoedError:
            assert self._orders() or self._held_by(operator)
            return
        assert not self._orders(), "a restore succeeded with an order in flight"
        assert not self._held_by(operator), "a restore ran while another operation held"
        assert content_digest(self.db) == self.digest

    @invariant()
    def database_is_sound(self) -> None:
        TALLY.interleavings += 1
        assert integrity(self.db) == ["ok"]


TwoBotsTwoOperators.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_bots_and_two_operators = TwoBotsTwoOperators.TestCase
