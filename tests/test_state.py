"""The in-process tracker: ordering anomalies, admissions, reconcile, and 8 threads at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbguard_plugin.events import OrderEvent, OrderKind, SessionInfo
from dbguard_plugin.state import Change, TradingState

SUBMITTED, ACCEPTED, PARTIAL = OrderKind.SUBMITTED, OrderKind.ACCEPTED, OrderKind.PARTIALLY_FILLED
FILLED, CANCELLED, REJECTED, EXPIRED = (
    OrderKind.FILLED, OrderKind.CANCELLED, OrderKind.REJECTED, OrderKind.EXPIRED,
)
PROGRESS = (SUBMITTED, ACCEPTED, PARTIAL)  # the order the exchange moves a live order in


def ev(oid: str, kind: OrderKind, symbol: str = "", side: str = "") -> OrderEvent:
    return OrderEvent.of(oid, kind, symbol, side)


def in_flight(state: TradingState) -> dict[str, OrderKind]:
    return {order.order_id: order.kind for order in state.snapshot().orders}


# -- plain unit tests --------------------------------------------------------------------------


def test_normal_life_of_an_order():
    state = TradingState()
    first = state.apply(ev("1", SUBMITTED, "BTC/USDT", "buy"))
    assert (first.before, first.after, first.in_flight, first.anomaly) == (None, SUBMITTED, 1, None)
    assert first.flipped is True
    assert state.apply(ev("1", ACCEPTED)).after is ACCEPTED
    assert state.apply(ev("1", PARTIAL)).after is PARTIAL
    (order,) = state.snapshot().orders
    assert (order.symbol, order.side, order.kind) == ("BTC/USDT", "buy", PARTIAL)
    last = state.apply(ev("1", FILLED))
    assert (last.before, last.after, last.in_flight, last.flipped) == (PARTIAL, None, 0, True)
    assert not state.busy
    assert state.anomalies == Counter()


def test_fill_before_submit_is_unknown_and_the_late_submit_is_ignored():
    state = TradingState()
    fill = state.apply(ev("7", FILLED))
    assert fill.anomaly == "unknown"
    assert fill.flipped is False
    late = state.apply(ev("7", SUBMITTED))
    assert late.anomaly == "late"
    assert in_flight(state) == {}
    assert state.anomalies == Counter(unknown=1, late=1)


def test_second_cancel_is_a_duplicate():
    state = TradingState()
    state.apply(ev("c", SUBMITTED))
    assert state.apply(ev("c", CANCELLED)).anomaly is None
    again = state.apply(ev("c", CANCELLED))
    assert again.anomaly == "duplicate"
    assert (again.before, again.after, again.in_flight) == (None, None, 0)
    assert state.anomalies == Counter(duplicate=1)


def test_terminal_event_for_an_unknown_id_is_counted_not_raised():
    state = TradingState()
    for kind in (CANCELLED, REJECTED, EXPIRED):
        change = state.apply(ev(f"never-seen-{kind.value}", kind))
        assert change.anomaly == "unknown"
    assert state.anomalies == Counter(unknown=3)
    assert not state.busy


def test_late_submit_after_fill_does_not_resurrect_the_order():
    state = TradingState()
    state.apply(ev("9", SUBMITTED))
    state.apply(ev("9", FILLED))
    for kind in PROGRESS:
        change = state.apply(ev("9", kind))
        assert change.anomaly == "late"
        assert change.after is None
        assert change.flipped is False
    assert in_flight(state) == {}
    assert state.anomalies == Counter(late=3)


def test_first_event_other_than_submit_still_puts_the_order_in_flight():
    state = TradingState()
    change = state.apply(ev("x", PARTIAL))
    assert change.anomaly == "out_of_order"
    assert in_flight(state) == {"x": PARTIAL}


def test_an_order_never_goes_back_to_an_earlier_state():
    state = TradingState()
    state.apply(ev("1", ACCEPTED))
    back = state.apply(ev("1", SUBMITTED))
    assert back.anomaly == "out_of_order"
    assert (back.before, back.after) == (ACCEPTED, ACCEPTED)
    same = state.apply(ev("1", ACCEPTED))
    assert same.anomaly == "duplicate"
    assert in_flight(state) == {"1": ACCEPTED}


def test_symbol_and_side_are_kept_from_the_first_event_that_had_them():
    state = TradingState()
    state.apply(ev("1", SUBMITTED))
    state.apply(ev("1", ACCEPTED, "ETH/USDT", "sell"))
    state.apply(ev("1", PARTIAL, "IGNORED", "ignored"))
    (order,) = state.snapshot().orders
    assert (order.symbol, order.side) == ("ETH/USDT", "sell")
    assert order.describe() == "1 (ETH/USDT sell, partially_filled)"
    assert order.as_dict()["state"] == "partially_filled"


def test_admissions_and_withdraw():
    state = TradingState()
    assert state.withdraw() is False  # nothing to give back: never negative
    assert state.snapshot().admissions == 0
    assert state.admit() is True  # idle -> busy
    assert state.admit() is False  # already busy
    assert state.busy
    assert state.withdraw() is False  # still one admission
    assert state.withdraw() is True  # busy -> idle
    assert not state.busy
    assert state.withdraw() is False
    assert state.snapshot().admissions == 0


def test_a_submit_consumes_an_admission_without_flipping():
    state = TradingState()
    assert state.admit() is True
    change = state.apply(ev("1", SUBMITTED))
    assert change.flipped is False  # busy before (admission) and after (order)
    snap = state.snapshot()
    assert snap.admissions == 0
    assert [o.order_id for o in snap.orders] == ["1"]
    # Only a submit consumes an admission; an out-of-order first event does not.
    state.admit()
    state.apply(ev("2", ACCEPTED))
    assert state.snapshot().admissions == 1
    assert state.withdraw() is False  # orders still in flight: not idle


def test_end_session_drops_admissions_but_keeps_orders():
    state = TradingState()
    session = SessionInfo("s", 1.0)
    state.start_session(session)
    state.admit()
    state.admit()
    state.apply(ev("1", SUBMITTED))
    assert state.end_session() is session
    snap = state.snapshot()
    assert snap.session is None
    assert snap.admissions == 0
    assert [o.order_id for o in snap.orders] == ["1"]
    assert state.end_session() is None


def test_reconcile_makes_the_in_flight_set_exactly_the_hosts_list():
    state = TradingState()
    state.apply(ev("keep", PARTIAL, "BTC/USDT", "buy"))
    state.apply(ev("gone", SUBMITTED))
    state.apply(ev("filled", SUBMITTED))
    state.apply(ev("filled", FILLED))
    state.admit()
    flipped = state.reconcile({"keep": ("X", "x"), "new": ("ETH/USDT", "sell"),
                               "filled": ("SOL/USDT", "buy")})
    assert flipped is False  # busy before and after
    orders = {o.order_id: o for o in state.snapshot().orders}
    assert set(orders) == {"keep", "new", "filled"}
    # An order already tracked keeps what the tracker knew about it.
    assert (orders["keep"].kind, orders["keep"].symbol) == (PARTIAL, "BTC/USDT")
    # An order only the host knows is in flight, as accepted, with the host's symbol/side.
    assert (orders["new"].kind, orders["new"].symbol, orders["new"].side) == (
        ACCEPTED, "ETH/USDT", "sell")
    # The host's list wins even over an id the tracker saw end.
    assert orders["filled"].kind is ACCEPTED
    assert state.snapshot().admissions == 0
    assert state.anomalies["reconciled"] == 1  # "gone" ended without a callback
    # "gone" is remembered as ended: a late event for it does not resurrect it.
    assert state.apply(ev("gone", ACCEPTED)).anomaly == "late"


def test_reconcile_reports_flips():
    state = TradingState()
    assert state.reconcile({}) is False
    assert state.reconcile({"1": ("BTC/USDT", "buy")}) is True
    assert state.reconcile({"1": ("BTC/USDT", "buy")}) is False
    assert state.reconcile({}) is True
    state.admit()
    assert state.reconcile({}) is True  # the unused admission is dropped: busy -> idle
    assert not state.busy


def test_snapshot_is_a_copy():
    state = TradingState()
    state.apply(ev("1", SUBMITTED))
    snap = state.snapshot()
    state.apply(ev("1", FILLED))
    state.apply(ev("2", FILLED))
    assert [o.order_id for o in snap.orders] == ["1"]
    assert snap.anomalies == {}
    assert snap.busy
    assert snap.as_dict()["orders_in_flight"][0]["order_id"] == "1"


# -- the property: 8 threads, per-id sequences, exact expected outcome -----------------------

THREADS = 8
ID_POOL = [f"o{i}" for i in range(16)]


def expected_outcome(seq: Sequence[OrderKind]) -> tuple[OrderKind | None, Counter[str]]:
    """What the tracker must make of one id's events, from the documented rules alone.

    A terminal event ends the order and the id is remembered as ended; a terminal event
    for an id never seen is "unknown", any later terminal one a "duplicate"; a
    non-terminal event for an ended id is "late". Before any terminal event the order is
    in flight in the furthest state reached; a first event other than "submitted" is
    "out_of_order", a repeat of the current state a "duplicate", a step back "out_of_order".
    """
    anomalies: Counter[str] = Counter()
    current: OrderKind | None = None
    ended = False
    for kind in seq:
        if kind.terminal:
            if current is not None:
                current, ended = None, True
            elif ended:
                anomalies["duplicate"] += 1
            else:
                anomalies["unknown"] += 1
                ended = True
        elif ended:
            anomalies["late"] += 1
        elif current is None:
            if kind is not SUBMITTED:
                anomalies["out_of_order"] += 1
            current = kind
        elif PROGRESS.index(kind) > PROGRESS.index(current):
            current = kind
        else:
            anomalies["duplicate" if kind is current else "out_of_order"] += 1
    return current, anomalies


@st.composite
def threaded_scenarios(draw: st.DrawFn) -> tuple[dict[str, list[OrderKind]], list[list[str]]]:
    """Per-id event sequences, each id owned by one of 8 threads, interleaved per thread."""
    ids = draw(st.lists(st.sampled_from(ID_POOL), min_size=1, max_size=len(ID_POOL),
                        unique=True))
    sequences: dict[str, list[OrderKind]] = {}
    owners: dict[int, list[str]] = {t: [] for t in range(THREADS)}
    for oid in ids:
        sequences[oid] = draw(st.lists(st.sampled_from(list(OrderKind)), min_size=1,
                                       max_size=8))
        owners[draw(st.integers(0, THREADS - 1))].append(oid)
    schedules: list[list[str]] = []
    for thread in range(THREADS):
        # One slot per event of each owned id; shuffling the slots interleaves the ids
        # while each id's own events keep their order.
        slots = [oid for oid in owners[thread] for _ in sequences[oid]]
        schedules.append(draw(st.permutations(slots)) if slots else [])
    return sequences, schedules


def run_threads(state: TradingState, sequences: dict[str, list[OrderKind]],
                schedules: list[list[str]]) -> list[tuple[OrderEvent, Change]]:
    barrier = threading.Barrier(THREADS)
    changes: list[list[tuple[OrderEvent, Change]]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        position = Counter[str]()
        events = []
        for oid in schedules[thread]:
            events.append(ev(oid, sequences[oid][position[oid]], "SYM/USDT", "buy"))
            position[oid] += 1
        try:
            barrier.wait(timeout=30)
            for event in events:
                changes[thread].append((event, state.apply(event)))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    return [change for per_thread in changes for change in per_thread]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(threaded_scenarios())
def test_concurrent_events_leave_the_tracker_consistent(scenario):
    sequences, schedules = scenario
    state = TradingState()
    changes = run_threads(state, sequences, schedules)

    assert len(changes) == sum(len(seq) for seq in sequences.values())
    for event, change in changes:
        assert change.in_flight >= 0
        assert change.after is None or not change.after.terminal
        if event.kind.terminal:
            assert change.after is None

    snap = state.snapshot()
    assert all(not order.kind.terminal for order in snap.orders)
    assert len({order.order_id for order in snap.orders}) == len(snap.orders)
    assert snap.admissions == 0

    expected_flight: dict[str, OrderKind] = {}
    expected_anomalies: Counter[str] = Counter()
    for oid, seq in sequences.items():
        final, anomalies = expected_outcome(seq)
        expected_anomalies.update(anomalies)
        if final is not None:
            expected_flight[oid] = final
        # The simple statement of the rule: in flight iff no terminal event and at least
        # one non-terminal one.
        assert (final is not None) == (
            not any(k.terminal for k in seq) and any(not k.terminal for k in seq)
        )

    assert {o.order_id: o.kind for o in snap.orders} == expected_flight
    assert +Counter(snap.anomalies) == +expected_anomalies
    assert sum(1 for _, c in changes if c.anomaly) == sum(expected_anomalies.values())
    assert state.busy == bool(expected_flight)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=THREADS, max_size=THREADS))
def test_concurrent_admissions_balance(counts):
    state = TradingState()
    barrier = threading.Barrier(THREADS)

    def work(n: int, thread: int) -> None:
        barrier.wait(timeout=30)
        for i in range(n):
            state.admit()
            if i % 2:
                state.withdraw()
            else:
                oid = f"{thread}-{i}"
                state.apply(ev(oid, SUBMITTED))
                state.apply(ev(oid, FILLED))

    workers = [threading.Thread(target=work, args=(n, t)) for t, n in enumerate(counts)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    snap = state.snapshot()
    assert snap.admissions == 0
    assert snap.orders == ()
    assert not state.busy
    assert snap.anomalies == {}
