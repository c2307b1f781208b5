"""The freqtrade adapter: a strategy mixin that reports freqtrade's trading to dbguard.

Freqtrade has no plugin registry; strategy callbacks are its supported extension point.
A user puts the mixin in front of their strategy, in a file of its own::

    from dbguard_plugin.hosts.freqtrade import DbGuardMixin
    from my_strategy import MyStrategy as Base

    class MyStrategy(DbGuardMixin, Base):
        pass

and configures it with a ``"dbguard"`` object in config.json. Each override calls the
strategy's own method and never lets an exception of dbguard's reach the bot: it is
logged, and the bot trades on as it would without dbguard.

Mapping: ``bot_start`` starts the session (freqtrade calls it after ``init_db``), which
takes the session-start backup; ``confirm_trade_entry`` / ``confirm_trade_exit`` admit
the order (False while an operation such as a restore holds the lease);
``order_filled`` reports the fill; ``bot_loop_start`` calls :meth:`Guard.tick` and
reconciles the tracker with the rows of ``Order.get_open_orders()`` (freqtrade has no
cancel callback: a timed-out entry without fills deletes its trade), in some 20 µs a
loop; ``ft_bot_cleanup`` commits, ends the session and takes the session-end backup.
After a replacement the adapter removes freqtrade's scoped sessions so the bot re-reads
the restored rows.
"""

from __future__ import annotations

import importlib
import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select

from dbguard_plugin.core.guard import Guard
from dbguard_plugin.events import Operation
from dbguard_plugin.hosts.freqtrade_config import settings
from dbguard_plugin.plugin.hookspecs import hookimpl

log = logging.getLogger(__name__)

__all__ = ["DbGuardMixin"]

HOST = "freqtrade"

#: freqtrade run modes that trade (and write the database); backtesting, hyperopt and
#: the utility commands load strategies too, and dbguard stays out of their way.
_TRADING_MODES = frozenset({"live", "dry_run"})

#: An order's status when freqtrade calls order_filled (ccxt's words) -> dbguard's.
_ENDED = {
    "closed": "filled",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "expired": "expired",
    "rejected": "rejected",
}

#: The database the last bot in this process guarded: a config reload builds a new
#: strategy, so only the module remembers what the previous one used.
_previous_database: str | None = None

#: The open-orders query's SQL by dialect name, compiled on first use (freqtrade is
#: imported lazily); None where it would need bound parameters.
_open_orders_compiled: dict[str, str | None] = {}

T = TypeVar("T")

if TYPE_CHECKING:
    # The callbacks the mixin extends, as freqtrade's IStrategy declares them; mypy
    # checks the super() calls against these without freqtrade installed. At run time
    # the next class in the strategy's MRO (the user's strategy) provides them.
    class _Strategy:
        config: dict[str, Any]

        def bot_start(self, **kwargs: Any) -> None: ...

        def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None: ...

        def confirm_trade_entry(
            self, pair: str, order_type: str, amount: float, rate: float,
            time_in_force: str, current_time: datetime, entry_tag: str | None, side: str,
            **kwargs: Any,
        ) -> bool:
            return True

        def confirm_trade_exit(
            self, pair: str, trade: Any, order_type: str, amount: float, rate: float,
            time_in_force: str, exit_reason: str, current_time: datetime, **kwargs: Any,
        ) -> bool:
            return True

        def order_filled(
            self, pair: str, trade: Any, order: Any, current_time: datetime, **kwargs: Any
        ) -> None: ...

        def ft_bot_cleanup(self) -> None: ...
else:
    _Strategy = object


def _persistence() -> Any:
    return importlib.import_module("freqtrade.persistence")


class DbGuardMixin(_Strategy):
    """Put in front of a freqtrade strategy: ``class S(DbGuardMixin, MyStrategy): pass``."""

    _dbguard_guard: Guard | None = None
    _dbguard_refresher: _Refresher | None = None
    _dbguard_thread: int | None = None
    _dbguard_refresh_due: bool = False
    #: The open orders the last reconcile was given (None: none yet).
    _dbguard_reconciled: dict[str, tuple[str, str]] | None = None
    #: Set when the tracker may have moved since that reconcile (an admission, a fill,
    #: a refresh), from any thread; the loop takes and clears it.
    _dbguard_events: bool = False

    @property
    def dbguard(self) -> Guard | None:
        """The guard of the bot's database, or None (not trading, disabled, or failed)."""
        return self._dbguard_guard

    # -- freqtrade callbacks -----------------------------------------------------------

    def bot_start(self, **kwargs: Any) -> None:
        _safely("starting the session", self._dbguard_start, None)
        super().bot_start(**kwargs)

    def bot_loop_start(self, current_time: datetime, **kwargs: Any) -> None:
        guard = self._dbguard_guard
        if guard is not None:
            _safely("the loop's reconcile", lambda: self._dbguard_loop(guard), None)
        super().bot_loop_start(current_time=current_time, **kwargs)

    def confirm_trade_entry(
        self, pair: str, order_type: str, amount: float, rate: float, time_in_force: str,
        current_time: datetime, entry_tag: str | None, side: str, **kwargs: Any,
    ) -> bool:
        answer = super().confirm_trade_entry(
            pair=pair, order_type=order_type, amount=amount, rate=rate,
            time_in_force=time_in_force, current_time=current_time, entry_tag=entry_tag,
            side=side, **kwargs,
        )
        if not answer:
            return answer
        return answer if self._dbguard_admit(f"{side} entry on {pair}", pair, side) \
            else False

    def confirm_trade_exit(
        self, pair: str, trade: Any, order_type: str, amount: float, rate: float,
        time_in_force: str, exit_reason: str, current_time: datetime, **kwargs: Any,
    ) -> bool:
        answer = super().confirm_trade_exit(
            pair=pair, trade=trade, order_type=order_type, amount=amount, rate=rate,
            time_in_force=time_in_force, exit_reason=exit_reason, current_time=current_time,
            **kwargs,
        )
        if not answer:
            return answer
        return answer if self._dbguard_admit(f"exit ({exit_reason}) on {pair}", pair,
                                             "exit") else False

    def order_filled(
        self, pair: str, trade: Any, order: Any, current_time: datetime, **kwargs: Any
    ) -> None:
        guard = self._dbguard_guard
        if guard is not None:
            self._dbguard_events = True
            _safely("reporting a fill", lambda: _report_end(guard, pair, order), None)
        super().order_filled(
            pair=pair, trade=trade, order=order, current_time=current_time, **kwargs
        )

    def ft_bot_cleanup(self) -> None:
        try:
            super().ft_bot_cleanup()
        finally:
            _safely("ending the session", self._dbguard_stop, None)

    # -- the dbguard side ----------------------------------------------------------------

    def _dbguard_start(self) -> None:
        global _previous_database
        config = self.config
        mode = config.get("runmode")
        if str(getattr(mode, "value", mode)) not in _TRADING_MODES:
            return
        if self._dbguard_guard is not None:  # freqtrade calls bot_start once; be sure
            return
        settings_ = settings(config)
        if not settings_.enabled:
            log.info("dbguard: disabled (dbguard.enabled is false in %s)", settings_.source)
            return
        guard = Guard(settings_)
        database = guard.location.redacted
        if _previous_database is not None and _previous_database != database:
            log.warning(
                "dbguard: db_url changed after a config reload: was %s, now %s; dbguard "
                "now guards %s (the old database's backups stay in its own catalog)",
                _previous_database, database, database,
            )
        _previous_database = database
        self._dbguard_guard = guard
        self._dbguard_thread = threading.get_ident()
        refresher = _Refresher(self)
        guard.pm.register(refresher, name=f"dbguard-freqtrade-{id(self)}")
        self._dbguard_refresher = refresher
        session = guard.start_session(host=HOST, dry_run=bool(config.get("dry_run")))
        profile = f" (profile {guard.config.profile})" if guard.config.profile else ""
        log.info(
            "dbguard: guarding %s in the %s environment%s; session %s started; backups in %s",
            database, guard.config.environment, profile, session.session_id,
            guard.catalog.directory,
        )

    def _dbguard_loop(self, guard: Guard) -> None:
        self._dbguard_thread = threading.get_ident()
        guard.tick()  # may call dbguard_refresh: a replacement by another process
        if self._dbguard_refresh_due:
            self._dbguard_refresh()
        orders = _open_orders()
        # Cleared before the reconcile, so an event meanwhile is seen on the next loop.
        events, self._dbguard_events = self._dbguard_events, False
        if events or orders != self._dbguard_reconciled:
            # Only then: a reconcile rewrites this process's status file (a row on a
            # server database), which would otherwise happen on every loop for nothing.
            guard.reconcile(orders)
            self._dbguard_reconciled = orders

    def _dbguard_admit(self, what: str, pair: str, side: str) -> bool:
        guard = self._dbguard_guard
        if guard is None:
            return True
        self._dbguard_events = True  # the next loop drops an admission left unused
        # Named by pair and side: until the next loop's reconcile gives it an order id,
        # a veto in another process says what this bot is placing.
        admitted = _safely(f"admitting the {what}",
                           lambda: guard.admit_order(symbol=pair, side=side), True)
        if not admitted:
            log.info("dbguard: %s postponed; freqtrade tries again on a later loop", what)
        return admitted

    def _dbguard_refresh(self) -> None:
        """Drop the bot thread's scoped sessions so the next query reads the replaced
        database; objects loaded before it are not used again by freqtrade's loop."""
        self._dbguard_refresh_due = False
        self._dbguard_events = True
        persistence = _persistence()
        persistence.Trade.session.remove()
        custom = importlib.import_module("freqtrade.persistence.custom_data")
        custom_model = getattr(custom, "_CustomData", None)
        if custom_model is not None and hasattr(custom_model, "session"):
            custom_model.session.remove()
        wallets = getattr(self, "wallets", None)
        if wallets is not None:
            wallets.update()
        log.warning("dbguard: the database was replaced (restore or rollback); freqtrade's "
                    "sessions were refreshed and its trades are read again from it")

    def _dbguard_stop(self) -> None:
        guard, self._dbguard_guard = self._dbguard_guard, None
        if guard is None:
            return
        try:
            # The session-end backup must hold everything the bot wrote.
            _safely("the final commit", lambda: _persistence().Trade.commit(), None)
            still_open = [order.describe() for order in guard.state.snapshot().orders]
            if still_open:
                log.warning("dbguard: freqtrade stops with %d order(s) open at the exchange: "
                            "%s", len(still_open), ", ".join(still_open))
            guard.end_session()
            log.info("dbguard: session ended for %s", guard.location.redacted)
        finally:
            refresher, self._dbguard_refresher = self._dbguard_refresher, None
            if refresher is not None and guard.pm.is_registered(refresher):
                guard.pm.unregister(refresher)
            guard.close()

    def _dbguard_on_replaced(self, guard: Guard) -> None:
        own = self._dbguard_guard
        if own is None or guard.location.state_dir != own.location.state_dir:
            return
        self._dbguard_refresh_due = True
        # freqtrade's sessions are per thread: only the bot's own thread may drop its
        # session; from any other thread the refresh waits for the next loop.
        if threading.get_ident() == self._dbguard_thread:
            self._dbguard_refresh()


class _Refresher:
    """The adapter's ``dbguard_refresh`` implementation, one per running strategy."""

    def __init__(self, strategy: DbGuardMixin) -> None:
        self._strategy = weakref.ref(strategy)

    @hookimpl
    def dbguard_refresh(self, guard: Guard, operation: Operation) -> None:
        strategy = self._strategy()
        if strategy is not None:
            _safely(f"refreshing after the {operation.value}",
                    lambda: strategy._dbguard_on_replaced(guard), None)


def _open_orders() -> dict[str, tuple[str, str]]:
    """freqtrade's open orders (stoploss orders on the exchange included), by order id.

    The rows ``Order.get_open_orders()`` selects, read as plain columns on every loop, so
    the cheapest correct way counts: freqtrade's model compiles the query once for the
    bot's database dialect, and each loop runs that SQL on the connection of the bot's
    own session (so it reads what freqtrade committed, on SQLite or a server alike),
    without building ORM objects (about 8x the cost) or a SQLAlchemy result (about 2x).
    """
    session = _persistence().Order.session
    connection = session.connection()
    sql = _open_orders_sql(connection.dialect)
    if sql is None:
        rows: Any = session.execute(_open_orders_query())
    else:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql)
            rows = cursor.fetchall()
        finally:
            cursor.close()
    return {str(oid): (str(pair), str(side or ft_side))
            for oid, pair, side, ft_side in rows if oid}


def _open_orders_query() -> Any:
    order = _persistence().Order
    return select(order.order_id, order.ft_pair, order.side, order.ft_order_side).where(
        order.ft_is_open.is_(True)
    )


def _open_orders_sql(dialect: Any) -> str | None:
    """The query's SQL for *dialect*, compiled once; None if it needs bound parameters
    (then the loop runs it through SQLAlchemy)."""
    name = str(dialect.name)
    if name not in _open_orders_compiled:
        compiled = _open_orders_query().compile(dialect=dialect)
        _open_orders_compiled[name] = None if compiled.params else str(compiled)
    return _open_orders_compiled[name]


def _report_end(guard: Guard, pair: str, order: Any) -> None:
    oid = order.order_id
    if not oid:
        return
    oid = str(oid)
    kind = _ENDED.get(str(order.status).lower(), "filled")
    side = str(order.side or "")
    snapshot = guard.state.snapshot()
    if snapshot.admissions and all(o.order_id != oid for o in snapshot.orders):
        # Filled in the loop that placed it: the order takes the admission it was placed
        # under, so nothing stays "about to place an order".
        guard.order_event(oid, "submitted", symbol=pair, side=side)
    guard.order_event(oid, kind, symbol=pair, side=side)


def _safely(what: str, call: Callable[[], T], fallback: T) -> T:
    """Run dbguard's part of a callback; an exception is logged, never raised to the bot."""
    try:
        return call()
    except Exception as exc:
        log.error("dbguard: %s failed (%s: %s); freqtrade carries on without it", what,
                  type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return fallback
