"""In-process trading state: the session and the orders in flight.

Hosts call from several threads and do not promise order: a fill can arrive before its
submit, a cancel twice, an id we never saw. Every such event is counted and logged, never
raised, and the in-flight count can never go negative because it is the size of a dict.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from dbguard_plugin.events import OrderEvent, OrderKind, SessionInfo

log = logging.getLogger(__name__)

# How many finished order ids to remember, so a late or repeated event for one of them
# is recognised instead of resurrecting the order.
_ENDED_MEMORY = 10_000

_RANK = {OrderKind.SUBMITTED: 0, OrderKind.ACCEPTED: 1, OrderKind.PARTIALLY_FILLED: 2}


@dataclass(slots=True)
class InFlight:
    """An order the exchange may still act on (not frozen: it is built on the hot path)."""

    order_id: str
    symbol: str
    side: str
    kind: OrderKind
    since: float

    def as_dict(self) -> dict[str, object]:
        return {
            "order_id": self.order_id,
            "symbol": self.symbol,
            "side": self.side,
            "state": self.kind.value,
            "since": self.since,
        }

    def describe(self) -> str:
        what = " ".join(part for part in (self.symbol, self.side) if part)
        return f"{self.order_id} ({what}, {self.kind.value})" if what else self.order_id


class Change(NamedTuple):
    """What one event did to the tracker (a tuple: it is built for every event)."""

    before: OrderKind | None
    after: OrderKind | None
    in_flight: int
    anomaly: str | None
    #: True when the tracker went from idle to busy or back: the lease must follow.
    flipped: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent copy of the tracker, for status, vetoes and manifests."""

    session: SessionInfo | None
    orders: tuple[InFlight, ...]
    admissions: int
    anomalies: dict[str, int] = field(default_factory=dict)
    #: What the admissions are for, where the host said ("BTC/USDT buy").
    pending: tuple[str, ...] = ()

    @property
    def busy(self) -> bool:
        return bool(self.orders) or self.admissions > 0

    def as_dict(self) -> dict[str, object]:
        session = self.session
        return {
            "session": None
            if session is None
            else {
                "session_id": session.session_id,
                "started_at": session.started_at,
                "host": session.host,
                "dry_run": session.dry_run,
            },
            "orders_in_flight": [order.as_dict() for order in self.orders],
            "admissions": self.admissions,
            "pending": list(self.pending),
            "anomalies": dict(self.anomalies),
        }


class TradingState:
    """Thread-safe tracker of one host process's session and in-flight orders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: dict[str, InFlight] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        #: What each admission is for ("BTC/USDT buy"), oldest first: a status names it
        #: before the host has an order id.
        self._pending: list[str] = []
        self._session: SessionInfo | None = None
        self.anomalies: Counter[str] = Counter()

    # -- session ---------------------------------------------------------------

    def start_session(self, session: SessionInfo) -> None:
        with self._lock:
            self._session = session

    def end_session(self) -> SessionInfo | None:
        with self._lock:
            session, self._session = self._session, None
            self._pending.clear()
            return session

    @property
    def session(self) -> SessionInfo | None:
        return self._session

    # -- orders ----------------------------------------------------------------

    def admit(self, what: str = "") -> bool:
        """Reserve room for an order about to be submitted (*what*: its pair and side, for
        the status). Returns True on 0 -> busy."""
        with self._lock:
            was_busy = bool(self._orders) or bool(self._pending)
            self._pending.append(what)
            return not was_busy

    def withdraw(self) -> bool:
        """Give back an admission that produced no order. Returns True on busy -> 0."""
        with self._lock:
            if not self._pending:
                return False
            self._pending.pop()
            return not self._orders and not self._pending

    def apply(self, event: OrderEvent) -> Change:
        return self.record(event.order_id, event.kind, event.symbol, event.side, event.timestamp)

    def record(
        self, oid: str, kind: OrderKind, symbol: str, side: str, timestamp: float
    ) -> Change:
        """Apply one event given as plain values (the hot path builds no event object)."""
        with self._lock:
            was_busy = bool(self._orders) or bool(self._pending)
            current = self._orders.get(oid)
            before = current.kind if current is not None else None
            anomaly: str | None = None
            if kind.terminal:
                if current is not None:
                    del self._orders[oid]
                    self._remember_ended(oid)
                elif oid in self._ended:
                    anomaly = "duplicate"
                else:
                    anomaly = "unknown"
                    self._remember_ended(oid)
                after = None
            elif current is not None:
                if _RANK[kind] > _RANK[current.kind]:
                    current.kind = kind
                    current.symbol = current.symbol or symbol
                    current.side = current.side or side
                    after = kind
                else:
                    anomaly = "duplicate" if kind is current.kind else "out_of_order"
                    after = current.kind
            elif oid in self._ended:
                anomaly = "late"
                after = None
            else:
                if kind is not OrderKind.SUBMITTED:
                    anomaly = "out_of_order"
                elif self._pending:
                    self._consume(symbol, side)
                self._orders[oid] = InFlight(oid, symbol, side, kind, timestamp)
                after = kind
            if anomaly is not None:
                self.anomalies[anomaly] += 1
            busy = bool(self._orders) or bool(self._pending)
            count = len(self._orders)
        if anomaly is not None:
            log.info("order event %s for %s counted as %s", kind.value, oid, anomaly)
        return Change(before, after, count, anomaly, was_busy != busy)

    def reconcile(self, open_orders: dict[str, tuple[str, str]]) -> bool:
        """Make the in-flight set exactly *open_orders* (id -> (symbol, side)).

        The host's own view of open orders wins: orders it no longer lists ended
        (cancelled or deleted without a callback), orders it lists are in flight, and
        unused admissions are dropped. Returns True when busy flipped.
        """
        with self._lock:
            was_busy = bool(self._orders) or bool(self._pending)
            for oid in [oid for oid in self._orders if oid not in open_orders]:
                del self._orders[oid]
                self._remember_ended(oid)
                self.anomalies["reconciled"] += 1
            for oid, (symbol, side) in open_orders.items():
                if oid not in self._orders:
                    self._ended.pop(oid, None)
                    self._orders[oid] = InFlight(
                        oid, symbol, side, OrderKind.ACCEPTED, time.time()
                    )
            self._pending.clear()
            return was_busy != bool(self._orders)

    def _consume(self, symbol: str, side: str) -> None:
        """The admission an order just submitted used: the one for its pair and side."""
        what = describe(symbol, side)
        self._pending.remove(what) if what in self._pending else self._pending.pop(0)

    def _remember_ended(self, oid: str) -> None:
        self._ended[oid] = None
        if len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)

    # -- reading -----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._orders) or bool(self._pending)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                self._session,
                tuple(dataclasses.replace(order) for order in self._orders.values()),
                len(self._pending),
                dict(self.anomalies),
                tuple(p for p in self._pending if p),
            )


def describe(symbol: str, side: str) -> str:
    """An order's pair and side as a status and a veto name it: "BTC/USDT buy"."""
    return " ".join(part for part in (symbol, side) if part)
