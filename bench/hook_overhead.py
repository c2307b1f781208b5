"""What dbguard adds to a host's order path: a host loop with and without the plugin.

    python bench/hook_overhead.py [--events N] [--repeat R] [--json]

A host loop builds the values of N order events (id, kind, symbol, side) and handles them
the way a host would (a journal list and an open-orders dict). The dbguard variant also
calls ``guard.order_event(...)`` on a real :class:`~dbguard_plugin.Guard` over a SQLite
file, with a started session. One long-lived order is open for the whole measurement, so
the in-flight count never returns to zero and no measured event flips the lease (the
lease and its status file are only touched on the 0 -> 1 and 1 -> 0 transitions).

Both variants run in the same process, interleaved over R repeats (A B, then B A, ...)
so that drift (frequency scaling, a busy neighbour) hits both alike. Two passes per
variant and repeat: the whole loop timed once (total / N), and the same loop timed event
by event with ``time.perf_counter_ns`` (median and p99).

An audit hook (``sys.addaudithook``) counts files opened for writing, renamed or removed
while the measured loops run, split by thread: the event path runs on the main thread
and must write nothing; the status publisher's daemon thread may rewrite the status file.

A benchmark is not a test: the target line says PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from dbguard_plugin import Guard, __version__

#: The issue's target: dbguard adds at most this much to one order event (median).
TARGET_US = 5.0

KINDS = ("submitted", "accepted", "filled")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
SIDES = ("buy", "sell")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class WriteCounter:
    """Counts file writes (open for writing, rename/replace, remove) while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.main = 0
        self.other = 0
        self.main_paths: list[str] = []
        self._main_thread = threading.main_thread()

    def install(self) -> None:
        sys.addaudithook(self._hook)  # cannot be removed; it only counts while armed

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed:
            return
        if event == "open":
            _path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            )
        else:
            writes = event in ("os.rename", "os.remove", "os.truncate")
        if not writes:
            return
        if threading.current_thread() is self._main_thread:
            self.main += 1
            if len(self.main_paths) < 10:
                self.main_paths.append(f"{event} {args[0]}")
        else:
            self.other += 1


def host_loop(n: int, prefix: str, guard: Guard | None) -> int:
    """One pass over *n* events, timed as a whole. Returns nanoseconds."""
    journal: list[tuple[str, str, str, str]] = []
    book: dict[str, str] = {}
    append = journal.append
    report = guard.order_event if guard is not None else None
    start = time.perf_counter_ns()
    for i in range(n):
        order = i // 3
        oid = f"{prefix}{order}"
        kind = KINDS[i % 3]
        symbol = SYMBOLS[order % 4]
        side = SIDES[order & 1]
        append((oid, kind, symbol, side))
        if kind == "filled":
            book.pop(oid, None)
        else:
            book[oid] = kind
        if report is not None:
            report(oid, kind, symbol=symbol, side=side)
    elapsed = time.perf_counter_ns() - start
    close_last_order(n, prefix, report)
    return elapsed


def host_loop_timed(n: int, prefix: str, guard: Guard | None) -> list[int]:
    """The same pass, each event timed on its own. Returns nanoseconds per event."""
    journal: list[tuple[str, str, str, str]] = []
    book: dict[str, str] = {}
    append = journal.append
    report = guard.order_event if guard is not None else None
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        start = clock()
        order = i // 3
        oid = f"{prefix}{order}"
        kind = KINDS[i % 3]
        symbol = SYMBOLS[order % 4]
        side = SIDES[order & 1]
        append((oid, kind, symbol, side))
        if kind == "filled":
            book.pop(oid, None)
        else:
            book[oid] = kind
        if report is not None:
            report(oid, kind, symbol=symbol, side=side)
        samples[i] = clock() - start
    close_last_order(n, prefix, report)
    return samples


def close_last_order(n: int, prefix: str, report: Callable[..., None] | None) -> None:
    """Fill the last order when *n* ended mid-lifecycle, outside the timing."""
    if report is not None and n % 3:
        report(f"{prefix}{(n - 1) // 3}", "filled")


def percentile(sorted_values: list[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return float(sorted_values[index])


def measure(events: int, repeat: int, guard: Guard, counter: WriteCounter) -> dict[str, Any]:
    variants: dict[str, Guard | None] = {"without": None, "with": guard}
    totals: dict[str, list[float]] = {"without": [], "with": []}
    samples: dict[str, list[int]] = {"without": [], "with": []}

    def run(body: Callable[[], None]) -> None:
        gc.collect()
        counter.armed = True
        try:
            body()
        finally:
            counter.armed = False

    # Warm up both variants (and start the status publisher's thread) before measuring.
    warm = min(events, 10_000)
    for name, target in variants.items():
        host_loop(warm, f"warm-{name}-", target)

    for r in range(repeat):
        order = ("without", "with") if r % 2 == 0 else ("with", "without")
        for name in order:
            target = variants[name]

            def total(name: str = name, target: Guard | None = target, r: int = r) -> None:
                totals[name].append(host_loop(events, f"t{r}-", target) / events)

            def timed(name: str = name, target: Guard | None = target, r: int = r) -> None:
                samples[name].extend(host_loop_timed(events, f"s{r}-", target))

            run(total)
            run(timed)

    result: dict[str, Any] = {}
    for name in variants:
        ordered = sorted(samples[name])
        result[name] = {
            "total_per_event_us": statistics.median(totals[name]) / 1000,
            "median_us": percentile(ordered, 0.5) / 1000,
            "p99_us": percentile(ordered, 0.99) / 1000,
        }
    return result


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "dbguard": __version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000, metavar="N",
                        help="order events per measured loop (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, metavar="R",
                        help="interleaved repeats of both variants (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.events < 3 or args.repeat < 1:
        parser.error("--events must be at least 3 and --repeat at least 1")

    counter = WriteCounter()
    counter.install()
    with tempfile.TemporaryDirectory(prefix="dbguard-bench-") as tmpdir:
        guard = Guard(db_url=f"sqlite:///{tmpdir}/bench.sqlite")
        try:
            guard.start_session(host="bench", dry_run=True)
            # The long-lived order: holds the lease for the whole measurement.
            if not guard.admit_order():
                raise SystemExit("bench: could not admit the long-lived order")
            guard.order_event("anchor", "submitted", symbol="BTC/USDT", side="buy")
            holding_before = guard.lease.holding_orders
            result = measure(args.events, args.repeat, guard, counter)
            holding_after = guard.lease.holding_orders
            busy_after = guard.state.busy
            guard.order_event("anchor", "filled")
            released = not guard.lease.holding_orders
            guard.end_session()
        finally:
            guard.close()

    without, with_ = result["without"], result["with"]
    added = {
        "total_per_event_us": with_["total_per_event_us"] - without["total_per_event_us"],
        "median_us": with_["median_us"] - without["median_us"],
        "p99_us": with_["p99_us"] - without["p99_us"],
    }
    figures: dict[str, Any] = {
        "machine": machine(),
        "events": args.events,
        "repeat": args.repeat,
        "without": without,
        "with": with_,
        "added": added,
        "ratio_total": with_["total_per_event_us"] / without["total_per_event_us"],
        "ratio_median": with_["median_us"] / without["median_us"],
        "main_thread_writes": counter.main,
        "main_thread_write_examples": counter.main_paths,
        "publisher_thread_writes": counter.other,
        "lease_held_throughout": holding_before and holding_after and busy_after,
        "lease_released_after": released,
        "target_added_median_us": TARGET_US,
        "pass": added["median_us"] <= TARGET_US and counter.main == 0,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0

    m = figures["machine"]
    print(f"dbguard {m['dbguard']} hook overhead: {args.events} events x {args.repeat} "
          f"repeats, {m['implementation']} {m['python']}, SQLite {m['sqlite']}, "
          f"{m['cpus']} CPUs")
    print(f"{'per event (us)':<22}{'without':>10}{'with':>10}{'added':>10}")
    for key, label in (("total_per_event_us", "loop total / N"),
                       ("median_us", "median"), ("p99_us", "p99")):
        print(f"{label:<22}{without[key]:>10.3f}{with_[key]:>10.3f}{added[key]:>10.3f}")
    print(f"ratio with/without: {figures['ratio_median']:.1f}x (median), "
          f"{figures['ratio_total']:.1f}x (loop total)")
    print(f"file writes on the main thread during measured events: {counter.main}"
          + (f" ({', '.join(counter.main_paths)})" if counter.main_paths else ""))
    print(f"file writes by the status publisher thread (off the event path): "
          f"{counter.other}")
    print(f"lease held throughout: {'yes' if figures['lease_held_throughout'] else 'NO'}; "
          f"released after the last fill: {'yes' if released else 'NO'}")
    verdict = "PASS" if figures["pass"] else "MISS"
    print(f"{verdict}: added {added['median_us']:.3f} us per event (median), target <= "
          f"{TARGET_US:.1f} us, main-thread writes {counter.main} (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
