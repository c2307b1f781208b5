"""What the freqtrade adapter adds to freqtrade's own loop: ``process()`` with and without.

    python bench/freqtrade_loop.py [--pairs N] [--loops L] [--repeat R] [--every-loop] [--json]

Runs freqtrade's real ``FreqtradeBot.process()`` in dry-run, offline: the exchange's I/O
is replaced exactly as the adapter's tests replace it (tests/freqtrade/offline_exchange.py),
and everything else (the bot, the dry-run order engine, the strategy with TA-Lib
indicators, persistence on a SQLite file) is freqtrade's own code. The two variants are
the same strategy without and with ``DbGuardMixin`` in front (BenchStrategy and
GuardedBenchStrategy in tests/freqtrade/strategies/dbguard_test_strategy.py).

For each repeat and variant (interleaved A B, then B A, ...) a new bot over a new
database enters every pair during a few warm-up loops (half the entries fill, half rest
below the market as open limit orders), then L loops are timed one by one with
``time.perf_counter_ns``. No backup is due in the timed loops (``backup_interval`` is off,
freqtrade's default ``process_only_new_candles`` leaves the analysis to the loop after a
new candle; ``--every-loop`` analyses every pair on every loop instead).

dbguard's own parts are timed separately on the guarded bot after its loops: the
adapter's whole ``bot_loop_start`` share, ``Guard.tick()``, the open-orders query,
``Guard.reconcile()`` and one admission (``admit_order`` + ``withdraw_admission``).

The two-bot comparison carries the difference between two bots and two moments, which on
a shared machine is larger than dbguard's share; so each guarded bot also runs L pairs
of loops with dbguard on and off in alternate loops (the same bot and state), timed in
CPU time of the bot's thread, and L pairs with dbguard off in both as a control. The
verdict is taken from those pairs: the median of their differences.

Needs freqtrade (``pip install -e '.[freqtrade]'``, Python 3.11+). A benchmark is not a
test: the target line says PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "freqtrade"))

# the tests' offline exchange, shared with them
from offline_exchange import (
    Market,
    bot_config,
    build_bot,
    patch_exchange,
    release_database,
)

from dbguard_plugin import __version__

#: The issue's target: the mixin adds at most this fraction to one loop.
TARGET_RATIO = 0.01

QUOTES = ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LINK", "AVAX", "LTC",
          "ATOM", "UNI")
WARMUP_LOOPS = 4


def pairs_of(n: int) -> list[str]:
    return [f"{base}/USDT" for base in QUOTES[:n]]


def run_block(workdir: Path, guarded: bool, pairs: list[str], loops: int,
              every_loop: bool, parts: int) -> dict[str, Any]:
    """One bot, one new database: warm up, time *loops* loops, time dbguard's parts."""
    user_data = workdir / "user_data"
    user_data.mkdir(parents=True)
    config = bot_config(
        user_data, f"sqlite:///{user_data / 'tradesv3.sqlite'}", pairs=pairs,
        strategy="GuardedBenchStrategy" if guarded else "BenchStrategy",
        max_open_trades=len(pairs), dbguard={"environment": "testing"},
    )
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    bot = build_bot(config_file)
    try:
        strategy = bot.strategy
        strategy.process_only_new_candles = not every_loop
        strategy.want_entry = True
        for _ in range(WARMUP_LOOPS):
            bot.process()
        from freqtrade.persistence import Order, Trade

        contents = {
            "open_trades": len(Trade.get_open_trades()),
            "open_orders": len(list(Order.get_open_orders())),
        }
        wall, cpu = time.perf_counter_ns, time.thread_time_ns
        samples, cpu_samples = [0] * loops, [0] * loops
        gc.collect()
        for i in range(loops):
            start, start_cpu = wall(), cpu()
            bot.process()
            samples[i], cpu_samples[i] = wall() - start, cpu() - start_cpu
        result: dict[str, Any] = {"samples_ns": samples, "cpu_samples_ns": cpu_samples,
                                  **contents}
        if guarded:
            result["alternating"] = time_alternating(bot, strategy, loops)
            result["control"] = time_alternating(bot, strategy, loops, control=True)
            result["parts_us"] = time_parts(strategy, parts)
        return result
    finally:
        bot.cleanup()
        release_database()


def time_alternating(bot: Any, strategy: Any, loops: int,
                     control: bool = False) -> dict[str, list[int]]:
    """*loops* pairs of loops of the guarded bot, dbguard on in one and off in the other
    (on-off, then off-on, ...): the same bot, state and moment, so the difference of the
    two is dbguard's and little else. CPU time of the bot's thread, which other
    processes on the machine do not inflate; wall time alongside. With *control*,
    dbguard is off in both (an A/A run: what the method reports when nothing differs)."""
    guard = strategy.dbguard
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    out: dict[str, list[int]] = {"on_cpu": [], "off_cpu": [], "on_wall": [], "off_wall": []}
    try:
        for i in range(loops):
            for enabled in ((True, False) if i % 2 == 0 else (False, True)):
                # off: the mixin's callbacks find no guard and only call the strategy's
                strategy._dbguard_guard = guard if enabled and not control else None
                start, start_cpu = wall(), cpu()
                bot.process()
                key = "on" if enabled else "off"
                out[f"{key}_wall"].append(wall() - start)
                out[f"{key}_cpu"].append(cpu() - start_cpu)
    finally:
        strategy._dbguard_guard = guard
    return out


def time_parts(strategy: Any, n: int) -> dict[str, float]:
    """Median microseconds of each of dbguard's per-loop parts, on the live bot."""
    from dbguard_plugin.hosts import freqtrade as adapter

    guard = strategy.dbguard
    if guard is None:
        raise SystemExit("bench: the guarded strategy has no guard: see the bot's log")
    orders = adapter._open_orders()

    def admission() -> None:
        if guard.admit_order():
            guard.withdraw_admission()

    calls: dict[str, Callable[[], Any]] = {
        "bot_loop_start share": lambda: strategy._dbguard_loop(guard),
        "Guard.tick()": guard.tick,
        "open-orders query": adapter._open_orders,
        "Guard.reconcile()": lambda: guard.reconcile(orders),
        "admission (admit + withdraw)": admission,
    }
    clock = time.perf_counter_ns
    out = {}
    for name, call in calls.items():
        for _ in range(min(n, 50)):
            call()
        samples = []
        for _ in range(n):
            start = clock()
            call()
            samples.append(clock() - start)
        out[name] = statistics.median(samples) / 1000
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    pairs = pairs_of(args.pairs)
    patch_exchange(setattr, Market(pairs=pairs, wave=0.01))
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="dbguard-ftbench-") as tmp:
        for r in range(args.repeat):
            order = (False, True) if r % 2 == 0 else (True, False)
            for guarded in order:
                workdir = Path(tmp) / f"{r}-{'with' if guarded else 'without'}"
                runs["with" if guarded else "without"].append(
                    run_block(workdir, guarded, pairs, args.loops, args.every_loop, args.parts)
                )
    return {"pairs": pairs, "runs": runs}


def summary(runs: list[dict[str, Any]], key: str = "samples_ns") -> dict[str, Any]:
    pooled = sorted(s for run in runs for s in run[key])
    return {
        "median_ms": statistics.median(pooled) / 1e6,
        "p90_ms": pooled[int(0.9 * (len(pooled) - 1))] / 1e6,
        "repeat_medians_ms": [statistics.median(run[key]) / 1e6 for run in runs],
        "open_trades": runs[0]["open_trades"],
        "open_orders": runs[0]["open_orders"],
    }


def alternating(runs: list[dict[str, Any]], clock: str,
                key: str = "alternating") -> dict[str, Any]:
    """The guarded bots' alternating loops, pooled: medians and the paired difference."""
    on = [v for run in runs for v in run[key][f"on_{clock}"]]
    off = [v for run in runs for v in run[key][f"off_{clock}"]]
    diffs = [a - b for a, b in zip(on, off, strict=True)]
    return {"pairs": len(diffs), "on_median_ms": statistics.median(on) / 1e6,
            "off_median_ms": statistics.median(off) / 1e6,
            "added_paired_median_ms": statistics.median(diffs) / 1e6}


def machine() -> dict[str, str]:
    from freqtrade import __version__ as ft_version

    return {"dbguard": __version__, "freqtrade": ft_version,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(), "processor": platform.processor() or "?"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=8, metavar="N",
                        help=f"pairs in the whitelist, 2 to {len(QUOTES)} (default 8)")
    parser.add_argument("--loops", type=int, default=200, metavar="L",
                        help="timed loops per repeat and variant (default 200)")
    parser.add_argument("--repeat", type=int, default=5, metavar="R",
                        help="interleaved repeats of both variants (default 5)")
    parser.add_argument("--parts", type=int, default=2000, metavar="N",
                        help="calls per dbguard part timed on its own (default 2000)")
    parser.add_argument("--every-loop", action="store_true",
                        help="analyse every pair on every loop (process_only_new_candles off)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 2 <= args.pairs <= len(QUOTES) or args.loops < 10 or args.repeat < 1:
        parser.error(f"--pairs must be 2 to {len(QUOTES)}, --loops at least 10, "
                     "--repeat at least 1")

    # freqtrade logs every loop at INFO (its lines would be timed as terminal output);
    # dbguard's warning about the orders left open at each block's end is expected here.
    logging.disable(logging.WARNING)
    result = measure(args)
    runs_without, runs_with = result["runs"]["without"], result["runs"]["with"]
    without, with_ = summary(runs_without), summary(runs_with)
    without_cpu = summary(runs_without, "cpu_samples_ns")
    with_cpu = summary(runs_with, "cpu_samples_ns")
    paired = [w - o for w, o in zip(with_["repeat_medians_ms"], without["repeat_medians_ms"],
                                    strict=True)]
    added_ms = with_["median_ms"] - without["median_ms"]
    alt_cpu, alt_wall = alternating(runs_with, "cpu"), alternating(runs_with, "wall")
    control_cpu = alternating(runs_with, "cpu", "control")
    parts = {name: statistics.median(run["parts_us"][name] for run in runs_with)
             for name in runs_with[0]["parts_us"]}
    budget_ms = TARGET_RATIO * without["median_ms"]
    figures: dict[str, Any] = {
        "machine": machine(),
        "loop": {
            "pairs": result["pairs"], "timeframe": "5m", "candles_per_pair": 200,
            "indicators": "EMA 9/21/50/100, RSI 14, MACD, Bollinger 20, ATR 14, ADX 14",
            "analysis": "every loop" if args.every_loop else
                        "new candles only (process_only_new_candles, freqtrade's default)",
            "open_trades": with_["open_trades"], "open_orders": with_["open_orders"],
            "backup_interval": "off (no backup due)",
        },
        "loops": args.loops, "repeat": args.repeat,
        "without": without, "with": with_,
        "without_cpu": without_cpu, "with_cpu": with_cpu,
        "added_ms": added_ms,
        "added_cpu_ms": with_cpu["median_ms"] - without_cpu["median_ms"],
        "added_paired_median_ms": statistics.median(paired),
        "ratio": with_["median_ms"] / without["median_ms"],
        # how far the loop alone moves between repeats: an added time below it is noise
        "spread_without_ms": max(without["repeat_medians_ms"])
        - min(without["repeat_medians_ms"]),
        "alternating_cpu": alt_cpu, "alternating_wall": alt_wall,
        "control_cpu": control_cpu,
        "dbguard_parts_us": parts,
        "target_added_ratio": TARGET_RATIO,
        "budget_ms": budget_ms,
        # the verdict: the same bot with dbguard on and off in alternate loops, CPU time
        "pass": alt_cpu["added_paired_median_ms"] <= budget_ms,
        "pass_two_bots_wall": added_ms <= budget_ms,
        "pass_by_parts": parts["bot_loop_start share"] / 1000 <= budget_ms,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    report(args, figures)
    return 0


def report(args: argparse.Namespace, f: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    m, loop = f["machine"], f["loop"]
    print(f"dbguard {m['dbguard']} in freqtrade {m['freqtrade']}'s process() loop: "
          f"{args.loops} loops x {args.repeat} repeats per variant, Python {m['python']}, "
          f"SQLite {m['sqlite']}, {m['platform']}")
    print(f"loop: dry-run, offline exchange, {len(loop['pairs'])} pairs "
          f"({', '.join(loop['pairs'])}), {loop['timeframe']} candles x "
          f"{loop['candles_per_pair']}, indicators {loop['indicators']}; analysis: "
          f"{loop['analysis']}; {loop['open_trades']} open trades, {loop['open_orders']} "
          f"open limit orders; backups: {loop['backup_interval']}")
    for title, off, on, added in (
        ("two bots, one per variant: wall time", f["without"], f["with"], f["added_ms"]),
        ("the same two bots: CPU time of the bot thread", f["without_cpu"], f["with_cpu"],
         f["added_cpu_ms"]),
    ):
        print()
        print(f"{title}")
        print(f"  {'per loop':<24}{'median ms':>11}{'p90 ms':>10}   medians per repeat (ms)")
        for name, s in (("without dbguard", off), ("with DbGuardMixin", on)):
            reps = " ".join(f"{v:.3f}" for v in s["repeat_medians_ms"])
            print(f"  {name:<24}{s['median_ms']:>11.3f}{s['p90_ms']:>10.3f}   {reps}")
        print(f"  {'added':<24}{added:>11.3f}   ({added / off['median_ms'] * 100:+.2f}% per loop)")
    print(f"  the loop alone moved by {f['spread_without_ms']:.3f} ms (wall) between repeats")
    print()
    print("the guarded bots, dbguard on and off in alternate loops (same bot, same state):")
    for clock in ("cpu", "wall"):
        a = f[f"alternating_{clock}"]
        print(f"  {clock:<5} {a['pairs']} pairs: on {a['on_median_ms']:.3f} ms, off "
              f"{a['off_median_ms']:.3f} ms, added (median of paired differences) "
              f"{a['added_paired_median_ms'] * 1000:+.1f} µs")
    c = f["control_cpu"]
    print(f"  control, dbguard off in both (A/A), cpu: "
          f"{c['added_paired_median_ms'] * 1000:+.1f} µs: the method's noise")
    print()
    print("dbguard's parts, each timed on its own on the guarded bot (median µs):")
    for name, us in f["dbguard_parts_us"].items():
        print(f"  {name:<32}{us:>8.1f}")
    print()
    budget_us = f["budget_ms"] * 1000
    print(f"target: dbguard adds <= {TARGET_RATIO:.0%} of the loop ({budget_us:.0f} µs) when "
          "no backup is due")
    alt = f["alternating_cpu"]["added_paired_median_ms"] * 1000
    print(f"  same bot, alternate loops, CPU: {alt:+.1f} µs -> {verdict(f['pass'])}")
    print(f"  two bots, wall (noisy):        {f['added_ms'] * 1000:+.1f} µs -> "
          f"{verdict(f['pass_two_bots_wall'])}")
    share = f["dbguard_parts_us"]["bot_loop_start share"]
    print(f"  bot_loop_start share alone:    {share:+.1f} µs -> {verdict(f['pass_by_parts'])}")

if __name__ == "__main__":
    raise SystemExit(main())
