"""What a verified dbguard restore and rollback cost: against cp, by step, and in memory.

    python bench/restore.py [--sizes 100M,1G] [--repeat N] [--json] [--dir PATH]

For each size the script builds a SQLite database shaped like a trading bot's (trades
and orders with their indexes, plus bulk candle and order-book rows; WAL mode,
checkpointed; the same shape as bench/backup.py's), takes a dbguard backup of it with
``Guard(Config(db_url=..., environment="development")).backup("manual")``, then changes
the live database a little, the way a bot that kept trading would (about 1% more trades,
orders, candles and order-book rows, some of the new trades open; some orders updated and
some order-book rows deleted), so that the restore has something to undo. Then, in one
process:

1. **Timed runs**, interleaved over N repeats (the order of the three units ``cp``,
   ``cp + fsync`` and ``restore then rollback`` is shuffled, seeded, in every repeat):
   ``cp`` of the live database file to a scratch name (a subprocess; the copy stays in
   the page cache, unsynced), the same followed by an fsync of the copy, dbguard's
   restore end to end (``dbguard_plugin.operations.restore.restore(guard, backup_id,
   force=True)``: the lease, the verification with integrity_check, the preview, the safety
   backup, the journal, write_into the live database, post_check, the bookkeeping) and
   dbguard's rollback (``rollback(guard, force=True)``, which restores that safety
   backup the same way). Before every variant ``sync`` runs and the files it reads (the
   live database, and the backup it restores) are read once, untimed, so every variant
   starts from the same warm page cache. Ratios are against ``cp`` of the same repeat.
   The safety backups a repeat makes are deleted after its rollback.
2. **By step**: the same restore and rollback runs are split by timing the engine's own
   functions (the verification (verify_read), its one read of the backup that hashes and
   decompresses it (read_into) and its integrity_check, the preview, the safety
   backup and its copy, quick_check, facts, fsync + sha256 (on a thread beside
   quick_check), write_into, post_check and its quick_check); write_into is split into
   the backup API's copy and commit, and the row counts and WAL checkpoint after it, by
   the time of its last progress call.
3. **The CLI** once, in a new process, for reference: ``python -m dbguard_plugin restore
   ID --db URL --yes --force --json`` and then ``rollback --db URL --yes --force --json``
   (wall time, and the engine's own duration from its JSON). The CLI shows a preview first,
   which verifies the backup (sha256, quick_check) and compares the two databases before
   the engine starts.
4. **Peak memory**: the restore, then the rollback, each in a fresh child process; the
   growth is ``ru_maxrss`` after the operation minus ``ru_maxrss`` just before it (after
   the imports and the Guard). The child forks once and measures in the forked process:
   on Linux ``ru_maxrss`` survives exec, so a child started by this (larger) process
   would otherwise start with this process's peak.

The 1 GiB size needs about 6.5 GiB free in --dir (default: a new temporary directory,
removed afterwards; with --dir a new subdirectory of PATH, removed afterwards).

A benchmark is not a test: the target lines say PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tradingdb import (
    FILL_BOOK,
    FILL_CANDLES,
    FILL_ORDERS,
    FILL_TRADES,
    GIB,
    MIB,
    build_database,
    copy_cp,
    copy_cp_fsync,
    db_url,
    fmt_spread,
    machine,
    maxrss_mib,
    no_nan,
    parse_size,
    remove,
    size_label,
    spread,
    sync,
    warm,
)

from dbguard_plugin.core.guard import Guard
from dbguard_plugin.engines.sqlite import backup as backup_module
from dbguard_plugin.engines.sqlite import facts as sqlite_facts
from dbguard_plugin.engines.sqlite import verify as verify_module
from dbguard_plugin.operations import restore as restore_module
from dbguard_plugin.operations import sqlite_write
from dbguard_plugin.settings.config import Config

#: The issue's targets: (seconds, applies to sizes up to / from).
TARGET_SMALL_S = 3.0
SMALL_SIZE = 100 * MIB
TARGET_LARGE_S = 60.0
LARGE_SIZE = GIB
TARGET_RSS_MIB = 50.0

#: Free space a size needs in --dir: the live file and its WAL, the backup, two safety
#: backups (restore's and rollback's) and the cp scratch copy, plus slack.
SPACE_FACTOR = 6
SPACE_SLACK = 512 * MIB

UNITS = ("cp", "cp + fsync", "restore + rollback")
VARIANTS = ("cp", "cp + fsync", "dbguard restore", "dbguard rollback")

#: Engine steps, timed by wrapping the functions restore() calls: (label, module, name),
#: each the module whose global the caller looks the function up in. The verification
#: reads the stored file once, hashing it as it decompresses it (read_into), and checks
#: that copy; the preview and write_into read the same copy.
#: A label with a "/" is a part of the step before the "/"; the Guard's own ``backup``
#: method (the safety backup) is wrapped on the instance, see StepTimer.installed.
STEPS: tuple[tuple[str, Any, str], ...] = (
    ("verify", verify_module, "verify_read"),
    ("verify/read: sha256 (+ decompress)", verify_module, "read_into"),
    ("verify/integrity_check", verify_module, "check"),
    ("preview", restore_module, "compute"),
    ("safety backup/copy", backup_module, "_copy_snapshot"),
    ("safety backup/quick_check", backup_module, "check"),
    ("safety backup/facts", backup_module, "read_facts"),
    ("safety backup/row counts", sqlite_facts, "row_counts"),
    ("safety backup/fsync + sha256 (beside quick_check)", backup_module, "_flush_and_digest"),
    ("write_into", restore_module, "write_into"),
    ("post_check", restore_module, "post_check"),
    ("post_check/quick_check", sqlite_write, "check"),
)
#: The order the breakdown is printed in (parts under their step, then "other").
STEP_ORDER = (
    "verify", "verify/read: sha256 (+ decompress)", "verify/integrity_check", "verify/other",
    "preview",
    "safety backup", "safety backup/copy", "safety backup/quick_check",
    "safety backup/facts", "safety backup/row counts",
    "safety backup/fsync + sha256 (beside quick_check)", "safety backup/other",
    "write_into", "write_into/copy + commit", "write_into/row counts + checkpoint + close",
    "post_check", "post_check/quick_check", "post_check/other",
    "other",
)

# Rows are generated by SQLite itself (a recursive CTE and random()), which is much
# faster than building them in Python. ?1 is the first id, ?2 the row count.
# -- helpers ----------------------------------------------------------------------------


def new_guard(db: Path) -> Guard:
    return Guard(Config(db_url=db_url(db), environment="development"))


# -- the database -----------------------------------------------------------------------


def change_database(path: Path) -> dict[str, Any]:
    """What a bot that kept trading after the backup adds: about 1% more rows everywhere
    (every 50th new trade open), some orders updated and some order-book rows deleted.
    In WAL mode with Python's defaults, as a bot writes; checkpointed afterwards."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        def top(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0] or 0)

        trades = top("SELECT max(id) FROM trades")
        orders = top("SELECT max(id) FROM orders")
        candles = top("SELECT max(rowid) FROM candles")
        book = top("SELECT max(id) FROM order_book")
        new_trades = max(50, trades // 100)
        new_candles = max(400, candles // 100)
        new_book = max(100, book // 100)
        conn.execute("BEGIN")
        conn.execute(FILL_TRADES, (trades + 1, new_trades))
        # FILL_ORDERS gives order i to trade (i + 2) / 3: continue right after the last.
        conn.execute(FILL_ORDERS, (orders + 1, 3 * new_trades))
        conn.execute("UPDATE orders SET ft_is_open = 1, status = 'open' WHERE ft_trade_id IN "
                     "(SELECT id FROM trades WHERE id > ? AND is_open = 1)", (trades,))
        updated = conn.execute(
            "UPDATE orders SET status = 'canceled', order_update_date = datetime('now') "
            "WHERE id <= ? AND id % 997 = 0", (orders,)).rowcount
        conn.execute(FILL_CANDLES, (candles + 1, new_candles))
        conn.execute(FILL_BOOK, (book + 1, new_book))
        deleted = conn.execute("DELETE FROM order_book WHERE id <= ? AND id % 500 = 0",
                               (book,)).rowcount
        conn.execute("COMMIT")
        opened = top(f"SELECT count(*) FROM trades WHERE id > {trades} AND is_open = 1")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = sqlite_facts.row_counts(conn)
    finally:
        conn.close()
    return {
        "trades_added": new_trades, "open_trades_added": opened,
        "orders_added": 3 * new_trades, "orders_updated": updated,
        "candles_added": new_candles, "order_book_added": new_book,
        "order_book_deleted": deleted, "rows": counts, "bytes": path.stat().st_size,
    }


# -- the copies ---------------------------------------------------------------------------


# -- the engine's steps -------------------------------------------------------------------


class StepTimer:
    """Times the engine's steps by wrapping the functions restore() calls."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.spans: dict[str, tuple[float, float]] = {}
        self.last_progress = math.nan
        self._saved: list[tuple[Any, str, Any, bool]] = []

    def progress(self, _done: int, _total: int) -> None:
        """write_into's progress callback: its last call is right after the commit."""
        self.last_progress = time.perf_counter()

    @contextlib.contextmanager
    def installed(self, guard: Guard) -> Iterator[None]:
        targets = [*STEPS, ("safety backup", guard, "backup")]
        for label, owner, name in targets:
            original = getattr(owner, name)  # a step that moved fails here, not silently
            on_instance = name in vars(owner)
            self._saved.append((owner, name, original, on_instance))
            setattr(owner, name, self._wrap(label, original))
        try:
            yield
        finally:
            for owner, name, original, on_instance in reversed(self._saved):
                if on_instance:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)
            self._saved.clear()

    def _wrap(self, label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self.current[label] = self.current.get(label, 0.0) + (end - start)
                self.spans[label] = (start, end)

        return timed

    def take(self, total: float) -> dict[str, float]:
        """This run's steps, each part's "other", and the engine's rest as "other"."""
        steps = dict(self.current)
        if "write_into" in self.spans and not math.isnan(self.last_progress):
            start, end = self.spans["write_into"]
            if start <= self.last_progress <= end:
                steps["write_into/copy + commit"] = self.last_progress - start
                steps["write_into/row counts + checkpoint + close"] = end - self.last_progress
        # read_facts calls row_counts: facts without the counts
        if "safety backup/facts" in steps:
            steps["safety backup/facts"] -= steps.get("safety backup/row counts", 0.0)
        parents = {label.split("/", 1)[0] for label in steps if "/" in label}
        for parent in parents:
            if parent in steps:
                parts = sum(v for k, v in steps.items()
                            if k.startswith(parent + "/") and "(beside" not in k)
                steps[f"{parent}/other"] = steps[parent] - parts
        steps["other"] = total - sum(v for k, v in steps.items() if "/" not in k)
        self.current, self.spans, self.last_progress = {}, {}, math.nan
        return steps


# -- the timed runs -----------------------------------------------------------------------


def measure(
    db: Path, work: Path, guard: Guard, backup_id: str, repeat: int
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """Wall times per variant (one per repeat) and the engine's steps per repeat, for
    the restore and the rollback."""
    out = work / "copy.sqlite"
    stored = guard.catalog.data_path(guard.catalog.get(backup_id))
    copies: dict[str, Callable[[Path, Path], None]] = {"cp": copy_cp, "cp + fsync": copy_cp_fsync}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    steps: dict[str, dict[str, list[float]]] = {"dbguard restore": {}, "dbguard rollback": {}}
    timer = StepTimer()

    def prepare(*reads: Path) -> None:
        remove(out)
        sync()
        warm(db, *reads)
        gc.collect()

    def engine(name: str, call: Callable[[], restore_module.Outcome]) -> restore_module.Outcome:
        with timer.installed(guard):
            start = time.perf_counter()
            outcome = call()
            elapsed = time.perf_counter() - start
        times[name].append(elapsed)
        for label, seconds in timer.take(elapsed).items():
            steps[name].setdefault(label, []).append(seconds)
        return outcome

    for r in range(repeat):
        order = list(UNITS)
        random.Random(r).shuffle(order)  # a new order per repeat: no fixed predecessor
        for unit in order:
            if unit in copies:
                prepare()
                start = time.perf_counter()
                copies[unit](db, out)
                times[unit].append(time.perf_counter() - start)
                continue
            prepare(stored)
            done = engine("dbguard restore", lambda: restore_module.restore(
                guard, backup_id, force=True, progress=timer.progress))
            safety = guard.catalog.get(done.safety_id)
            prepare(guard.catalog.data_path(safety))
            undone = engine("dbguard rollback", lambda: restore_module.rollback(
                guard, force=True, progress=timer.progress))
            for safety_id in (done.safety_id, undone.safety_id):
                guard.catalog.delete(guard.catalog.get(safety_id))
    remove(out)
    sync()
    return times, steps


# -- the CLI ------------------------------------------------------------------------------


def run_cli(db: Path, *args: str) -> dict[str, Any]:
    """One CLI command in a new process: its wall time and the engine's duration."""
    command = [sys.executable, "-m", "dbguard_plugin", *args, "--db", db_url(db), "--yes",
               "--force", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {"wall_s": wall, "exit_code": proc.returncode}
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {}
    if proc.returncode != 0 or "duration_s" not in data:
        result["error"] = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        return result
    result["engine_s"] = float(data["duration_s"])
    result["safety_id"] = data.get("safety_id", "")
    return result


def measure_cli(db: Path, guard: Guard, backup_id: str) -> dict[str, Any]:
    stored = guard.catalog.data_path(guard.catalog.get(backup_id))
    sync()
    warm(db, stored)
    restored = run_cli(db, "restore", backup_id)
    out: dict[str, Any] = {"restore": restored}
    if "error" in restored:
        return out
    sync()
    warm(db, guard.catalog.data_path(guard.catalog.get(restored["safety_id"])))
    rolled = run_cli(db, "rollback")
    out["rollback"] = rolled
    for result in (restored, rolled):
        if result.get("safety_id"):
            guard.catalog.delete(guard.catalog.get(result["safety_id"]))
    return out


# -- peak memory --------------------------------------------------------------------------


def rss_child_main(mode: str, db: str, backup_id: str) -> int:
    """The fresh child process: ru_maxrss growth across one restore or rollback.

    On Linux a process started with exec inherits the ru_maxrss of the process that
    started it (the kernel keeps the pre-exec peak), here the benchmark's own, which
    would hide the growth. So the child forks once and measures in the forked process,
    whose peak starts at its own size.
    """
    if hasattr(os, "fork"):
        sys.stdout.flush()
        pid = os.fork()
        if pid:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    code = 1
    try:
        guard = new_guard(Path(db))
        gc.collect()
        before = maxrss_mib()
        if mode == "restore":
            outcome = restore_module.restore(guard, backup_id, force=True)
        else:
            outcome = restore_module.rollback(guard, force=True)
        after = maxrss_mib()
        guard.close()
        json.dump({"before_mib": before, "after_mib": after, "growth_mib": after - before,
                   "safety_id": outcome.safety_id, "engine_s": outcome.duration_s},
                  sys.stdout)
        sys.stdout.flush()
        code = 0
    finally:
        if hasattr(os, "fork"):
            os._exit(code)
    return code


def measure_rss(
    db: Path, guard: Guard, backup_id: str, repeat: int, script: Path
) -> dict[str, Any]:
    """Per mode (restore, rollback): the growth over *repeat* fresh processes, or why
    it was skipped."""
    modes = ("restore", "rollback")
    if sys.platform == "win32":
        return {mode: {"skipped": "ru_maxrss is not available on Windows"} for mode in modes}
    stored = guard.catalog.data_path(guard.catalog.get(backup_id))
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            sync()
            warm(db, stored if mode == "restore" else guard.catalog.data_path(
                guard.catalog.get(runs["restore"][-1]["safety_id"])))
            proc = subprocess.run(
                [sys.executable, str(script), "--rss-child", mode, str(db), backup_id],
                check=False, capture_output=True, text=True,
            )
            try:
                run = json.loads(proc.stdout)
            except ValueError:
                error = (proc.stderr.strip() or proc.stdout.strip())[-500:]
                return {mode: {"skipped": f"the child failed (exit {proc.returncode}): "
                                          f"{error}"} for mode in modes}
            runs[mode].append(run)
        for mode in modes:  # the rollback restores the restore's safety backup: after both
            if runs[mode][-1].get("safety_id"):
                guard.catalog.delete(guard.catalog.get(runs[mode][-1]["safety_id"]))
    return {
        mode: {
            "growth_mib": spread([run["growth_mib"] for run in values]),
            "before_mib": spread([run["before_mib"] for run in values]),
            "runs": values,
        }
        for mode, values in runs.items()
    }


# -- one size -----------------------------------------------------------------------------


def run_size(size: int, work: Path, repeat: int, script: Path) -> dict[str, Any]:
    db = work / "tradesv3.sqlite"
    database = build_database(db, size)
    guard = new_guard(db)
    try:
        manifest = guard.backup("manual")
        changes = change_database(db)
        times, steps = measure(db, work, guard, manifest.id, repeat)
        cp = times["cp"]
        variants = {
            name: {
                "seconds": spread(values),
                "ratio_cp": spread([v / c for v, c in zip(values, cp, strict=True)]),
                "runs": values,
            }
            for name, values in times.items()
        }
        breakdown = {
            name: {label: {**spread(values), "runs": values}
                   for label, values in by_label.items()}
            for name, by_label in steps.items()
        }
        cli = measure_cli(db, guard, manifest.id)
        rss = measure_rss(db, guard, manifest.id, repeat, script)
    finally:
        guard.close()
        remove(db)
        shutil.rmtree(work / "tradesv3.sqlite.dbguard", ignore_errors=True)
    return {
        "size": size,
        "label": size_label(size),
        "database": database,
        "backup_bytes": manifest.size,
        "changes": changes,
        "variants": variants,
        "steps": breakdown,
        "cli": cli,
        "rss": rss,
    }


def verdicts(result: dict[str, Any]) -> list[tuple[bool, str]]:
    """(passed, text) per target for one size."""
    out = []
    label, size = result["label"], result["size"]
    v = result["variants"]
    if size <= SMALL_SIZE:
        s = v["dbguard restore"]["seconds"]
        out.append((s["median"] <= TARGET_SMALL_S,
                    f"{label}: restore end to end {s['median']:.2f} s (median; "
                    f"{s['min']:.2f}-{s['max']:.2f}), target <= {TARGET_SMALL_S:.0f} s"))
    if size >= LARGE_SIZE:
        for name in ("dbguard restore", "dbguard rollback"):
            s = v[name]["seconds"]
            out.append((s["median"] <= TARGET_LARGE_S,
                        f"{label}: {name.split()[1]} end to end {s['median']:.1f} s (median; "
                        f"{s['min']:.1f}-{s['max']:.1f}), target <= {TARGET_LARGE_S:.0f} s"))
    for mode, rss in result["rss"].items():
        if "growth_mib" not in rss:
            continue
        worst = rss["growth_mib"]["max"]
        out.append((worst <= TARGET_RSS_MIB,
                    f"{label}: peak RSS growth across one {mode} {worst:.1f} MiB (worst "
                    f"run), target <= {TARGET_RSS_MIB:.0f} MiB"))
    return out


# -- output -------------------------------------------------------------------------------


def print_size(result: dict[str, Any], repeat: int) -> None:
    db = result["database"]
    ch = result["changes"]
    rows = sum(db["rows"].values())
    print()
    print(f"== {result['label']}: {db['bytes'] / MIB:,.1f} MiB, {rows:,} rows in "
          f"{len(db['rows'])} tables, WAL, page size {db['page_size']} "
          f"(built in {db['build_s']:.0f} s); backup {result['backup_bytes'] / MIB:,.1f} MiB")
    print(f"live database changed after the backup: +{ch['trades_added']:,} trades "
          f"({ch['open_trades_added']} open), +{ch['orders_added']:,} orders, "
          f"{ch['orders_updated']:,} orders updated, +{ch['candles_added']:,} candles, "
          f"+{ch['order_book_added']:,} / -{ch['order_book_deleted']:,} order-book rows; "
          f"now {ch['bytes'] / MIB:,.1f} MiB")
    print(f"{repeat} interleaved repeats, warm page cache (the files a variant reads are "
          "read once before it), seconds: median (min-max)")
    print(f"  {'variant':<22}{'seconds':>26}{'x cp':>24}")
    for name, v in result["variants"].items():
        print(f"  {name:<22}{fmt_spread(v['seconds'], 3):>26}{fmt_spread(v['ratio_cp']):>24}")
    steps = result["steps"]
    restore_total = result["variants"]["dbguard restore"]["seconds"]["median"]
    rollback_total = result["variants"]["dbguard rollback"]["seconds"]["median"]
    print("  by step, seconds: median (min-max), and % of the median total")
    print(f"    {'step':<32}{'restore':>22}{'%':>5}{'rollback':>24}{'%':>5}")
    for label in STEP_ORDER:
        a = steps["dbguard restore"].get(label)
        b = steps["dbguard rollback"].get(label)
        if a is None and b is None:
            continue
        shown = ("  " + label.split("/", 1)[1]) if "/" in label else label
        cells = []
        for s, total in ((a, restore_total), (b, rollback_total)):
            if s is None:
                cells.append(f"{'-':>22}{'':>5}")
            else:
                cells.append(f"{fmt_spread(s, 3):>22}{100 * s['median'] / total:>5.0f}")
        print(f"    {shown:<32}{cells[0]}  {cells[1]}")
    cli = result["cli"]
    for mode in ("restore", "rollback"):
        c = cli.get(mode)
        if c is None:
            continue
        if "error" in c:
            print(f"  CLI {mode}: exit {c['exit_code']}: {c['error']}")
        else:
            rest = "start-up, recovery check, preview" if mode == "restore" else \
                "start-up, recovery check"  # a rollback shows no preview
            print(f"  CLI {mode} (one run, new process): {c['wall_s']:.2f} s wall, engine "
                  f"{c['engine_s']:.2f} s, the rest ({rest}) {c['wall_s'] - c['engine_s']:.2f} s")
    for mode, rss in result["rss"].items():
        if isinstance(rss, dict) and "growth_mib" in rss:
            print(f"  peak RSS growth across one {mode} (fresh process): "
                  f"{fmt_spread(rss['growth_mib'], 1)} MiB, from "
                  f"{rss['before_mib']['median']:.1f} MiB before it")
        else:
            print(f"  peak RSS across one {mode}: skipped ({rss.get('skipped')})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100M,1G",
                        help="database sizes, comma separated (default 100M,1G)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="repeats of every measurement (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--dir", type=Path, default=None, metavar="PATH",
                        help="where to build the databases (default: a temporary directory)")
    parser.add_argument("--rss-child", nargs=3, metavar=("MODE", "DB", "ID"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        return rss_child_main(*args.rss_child)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected sizes like 100M,1G")
    if not sizes or min(sizes) < MIB or args.repeat < 1:
        parser.error("--sizes must be at least 1M each and --repeat at least 1")

    script = Path(__file__).resolve()
    parent = args.dir.expanduser().resolve() if args.dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dbguard-bench-restore-", dir=parent))
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for size in sizes:
            need = SPACE_FACTOR * size + SPACE_SLACK
            free = shutil.disk_usage(work).free
            if free < need:
                skipped.append(f"{size_label(size)}: needs {need / MIB:,.0f} MiB free in "
                               f"{work}, {free / MIB:,.0f} MiB free")
                continue
            if not args.json:
                print(f"building and measuring {size_label(size)} in {work} ...",
                      file=sys.stderr, flush=True)
            results.append(run_size(size, work, args.repeat, script))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = [c for result in results for c in verdicts(result)]
    figures = {
        "machine": machine(),
        "repeat": args.repeat,
        "results": results,
        "skipped": skipped,
        "targets": {
            "restore_s_up_to_100mib": TARGET_SMALL_S,
            "restore_and_rollback_s_at_1gib": TARGET_LARGE_S,
            "rss_growth_mib": TARGET_RSS_MIB,
        },
        "verdicts": [{"pass": ok, "target": text} for ok, text in checks],
    }
    if args.json:
        print(json.dumps(no_nan(figures), indent=2))
        return 0

    m = figures["machine"]
    print(f"dbguard {m['dbguard']} restore benchmark: {m['implementation']} {m['python']}, "
          f"SQLite {m['sqlite']}, {m['cp']}, {m['cpus']} CPUs, {args.repeat} repeats")
    for result in results:
        print_size(result, args.repeat)
    for text in skipped:
        print(f"skipped {text}")
    print()
    for ok, text in checks:
        print(f"{'PASS' if ok else 'MISS'}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
