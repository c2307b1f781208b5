"""How long the ``dbguard`` command takes to answer on an idle SQLite database.

    python bench/cli_startup.py [--repeat N] [--json]

An operator's shell, a cron job and the demo's operator run ``dbguard`` as a new process
each time, so its start (the interpreter, the imports, the Guard) is most of what a
read-only command costs. The script makes an idle SQLite database in a temporary
directory and runs, as real processes, ``dbguard --help``, ``dbguard status --json`` and
``dbguard check restore`` against it, and ``python -c pass`` as the baseline: N times
each (default 10), interleaved (the order rotates every repeat) after one untimed
warm-up run of each, so drift in the machine's speed hits all of them. Bytecode is
cached as in an installed package (in a private ``PYTHONPYCACHEPREFIX`` directory the
warm-up fills), also where the environment sets ``PYTHONDONTWRITEBYTECODE``.

It prints each command's median wall time (with the lowest and highest run), the time
it adds to the baseline and its ratio to it, and whether the command imported
SQLAlchemy or a server driver: one more run of each with ``python -X importtime``,
whose report names every module the process imported.

A benchmark is not a test: the target line says PASS or MISS and the exit code is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from dbguard_plugin import __version__

#: The target: a read-only command on an idle SQLite database answers within this
#: (median wall time of a new process, interpreter start included).
TARGET_S = 0.15

#: Modules a SQLite command should never load: SQLAlchemy and the server drivers.
HEAVY = ("sqlalchemy", "psycopg", "psycopg2", "pymysql", "MySQLdb")


def make_database(directory: Path) -> Path:
    """An idle bot database: a trades and an orders table, a few rows, WAL mode."""
    path = directory / "tradesv3.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT, is_open INTEGER)")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, ft_trade_id INTEGER, "
                     "status TEXT)")
        conn.executemany("INSERT INTO trades (pair, is_open) VALUES (?, 0)",
                         [(f"PAIR{i}/USDT",) for i in range(20)])
    return path


def variants(url: str) -> dict[str, list[str]]:
    """The command lines measured, the baseline first."""
    dbguard = [sys.executable, "-m", "dbguard_plugin"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "dbguard --help": [*dbguard, "--help"],
        "dbguard status --json": [*dbguard, "status", "--json", "--db", url],
        "dbguard check restore": [*dbguard, "check", "restore", "--db", url],
    }


def environment(home: Path) -> dict[str, str]:
    """The process environment: no DBGUARD_* settings, and a private home, so neither a
    profiles file nor a state directory of the user's own is read. Bytecode is cached
    as an installed package's is (pip compiles it), in a private directory that the
    warm-up run fills: without it every run compiles every module again."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DBGUARD_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), PYTHONPYCACHEPREFIX=str(home / "pycache"))
    return env


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """One process, in the private home (``-m`` puts the working directory first on the
    path): its wall time in seconds and its exit code."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, cwd=env["HOME"],
                          stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, done.returncode


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """The SQLAlchemy and driver modules one run of *argv* imports (``-X importtime``)."""
    traced = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(traced, env=env, stdout=subprocess.DEVNULL, cwd=env["HOME"],
                          stderr=subprocess.PIPE, text=True, check=False)
    found = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[-1].strip()
            if module.split(".")[0] in HEAVY:
                found.add(module)
    return sorted(found)


def measure(commands: dict[str, list[str]], repeat: int,
            env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each command *repeat* times, interleaved, after one warm-up run of each."""
    names = list(commands)
    for name in names:
        run(commands[name], env)
    times: dict[str, list[float]] = {name: [] for name in names}
    codes: dict[str, set[int]] = {name: set() for name in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds, code = run(commands[name], env)
            times[name].append(seconds)
            codes[name].add(code)
    return {name: {"median_s": statistics.median(times[name]), "min_s": min(times[name]),
                   "max_s": max(times[name]), "runs_s": times[name],
                   "exit_codes": sorted(codes[name]),
                   "heavy_imports": heavy_imports(commands[name], env)}
            for name in names}


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
    parser.add_argument("--repeat", type=int, default=10, metavar="N",
                        help="runs of each command, interleaved (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    with tempfile.TemporaryDirectory(prefix="dbguard-bench-") as tmpdir:
        home = Path(tmpdir)
        db = make_database(home)
        commands = variants(f"sqlite:///{db}")
        result = measure(commands, args.repeat, environment(home))

    baseline = result["python -c pass"]["median_s"]
    for figures in result.values():
        figures["added_s"] = figures["median_s"] - baseline
        figures["ratio"] = figures["median_s"] / baseline
    commands_only = {k: v for k, v in result.items() if k != "python -c pass"}
    report: dict[str, Any] = {
        "machine": machine(), "repeat": args.repeat, "target_s": TARGET_S,
        "commands": result,
        "pass": all(v["median_s"] <= TARGET_S and not v["heavy_imports"]
                    for v in commands_only.values()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"dbguard {m['dbguard']}, {m['implementation']} {m['python']}, SQLite {m['sqlite']}, "
          f"{m['cpus']} CPUs, {m['platform']}")
    print(f"{report['repeat']} runs of each command as a new process, interleaved; "
          "an idle SQLite database\n")
    print(f"{'command':<24} {'median':>8} {'min':>8} {'max':>8} {'added':>8} {'ratio':>6}  "
          "SQLAlchemy or a driver imported")
    for name, f in report["commands"].items():
        roots = sorted({name.split(".")[0] for name in f["heavy_imports"]})
        heavy = f"yes: {', '.join(roots)} ({len(f['heavy_imports'])} modules)" if roots else "no"
        codes = "" if f["exit_codes"] == [0] else f"  (exit codes {f['exit_codes']})"
        print(f"{name:<24} {f['median_s'] * 1000:6.0f} ms {f['min_s'] * 1000:5.0f} ms "
              f"{f['max_s'] * 1000:5.0f} ms {f['added_s'] * 1000:5.0f} ms "
              f"{f['ratio']:5.2f}x  {heavy}{codes}")
    verdict = "PASS" if report["pass"] else "MISS"
    print(f"\n{verdict}: every command's median <= {report['target_s'] * 1000:.0f} ms and no "
          "SQLAlchemy or server driver imported")


if __name__ == "__main__":
    sys.exit(main())
