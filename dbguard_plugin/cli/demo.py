"""``dbguard demo``: a paper-trading bot and an operator, on a throw-away SQLite file.

The bot goes through the real hooks and the real lease; the operator is a separate
``dbguard check restore`` process, exactly as an operator would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dbguard_plugin import signals
from dbguard_plugin.cli.options import common, handle_errors, options
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import locate

if TYPE_CHECKING:
    from dbguard_plugin.catalog.manifest import Manifest
    from dbguard_plugin.core.guard import Guard

_ORDERS = (
    ("1", "BTC/USDT", "buy", 0.01, 64_000.0),
    ("2", "ETH/USDT", "sell", 1.5, 3_400.0),
)
_AS_PROMISED = ("the restore waited for the orders and the session, and both session "
                "boundaries were backed up: all as it should be")


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo directory afterwards.")
@common
@handle_errors
def demo(keep: bool) -> None:
    """Run a paper-trading bot and an operator against a throw-away SQLite file."""
    opts = options()
    sys.exit(run_demo(db_url=opts.db, keep=keep, as_json=opts.json, echo=click.echo))


class Transcript:
    def __init__(self, echo: Callable[[str], None], as_json: bool) -> None:
        self.echo = echo
        self.as_json = as_json
        self.steps: list[dict[str, Any]] = []

    def say(self, who: str, message: str, **data: Any) -> None:
        self.steps.append({"who": who, "message": message, **data})
        if not self.as_json:
            lines = message.splitlines() or [""]
            self.echo(f"[{who:<8}] {lines[0]}")
            for line in lines[1:]:
                self.echo(f"{'':11}{line}")


def run_demo(
    db_url: str | None = None,
    keep: bool = False,
    as_json: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the demo; return 0 when everything behaved as dbguard promises, else 1."""
    # why here: costly (see cli.database)
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.settings.config import Config

    workdir: Path | None = None
    if db_url is None:
        workdir = Path(tempfile.mkdtemp(prefix="dbguard-demo-"))
        db_url = f"sqlite:///{workdir / 'tradesv3.sqlite'}"
    location = locate(db_url)
    if location.sqlite_path is None or location.sqlite_path.exists():
        raise ConfigError(
            f"the demo writes paper orders into a new SQLite file; {location.redacted} "
            "is not one (give --db sqlite:////path/to/new-file.sqlite, or no --db)"
        )
    out = Transcript(echo, as_json)
    guard = Guard(Config(db_url=db_url, environment="production"))
    try:
        ok = _play(guard, location.sqlite_path, db_url, out)
    finally:
        guard.close()
        if workdir is not None and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    out.say("demo", _AS_PROMISED if ok else "something did not behave as expected")
    if as_json:
        echo(json.dumps({"ok": ok, "steps": out.steps}, indent=2, default=str))
    return 0 if ok else 1


class _Backups:
    """The backups the guard announces, told in the transcript as they happen."""

    def __init__(self, guard: Guard, out: Transcript) -> None:
        self.out = out
        self.taken: list[Manifest] = []
        # blinker holds weak references: this object lives as long as the demo does.
        signals.backup_finished.connect(self.finished, sender=guard)
        signals.backup_failed.connect(self.failed, sender=guard)

    def finished(self, _sender: Guard, manifest: Manifest, **extra: Any) -> None:
        self.taken.append(manifest)
        self.out.say("dbguard", f"{manifest.reason} backup {manifest.id} verified "
                     f"({manifest.size:,} bytes, sha256 {manifest.sha256[:12]}...)",
                     backup=manifest.id, reason=manifest.reason)

    def failed(self, _sender: Guard, reason: str, error: str, **extra: Any) -> None:
        self.out.say("dbguard", f"{reason} backup FAILED: {error}")


def _play(guard: Guard, path: Path, db_url: str, out: Transcript) -> bool:
    """The bot trades, the operator asks, the orders fill, the operator asks again."""
    out.say("demo", f"paper-trading bot (pid {os.getpid()}) on {path}")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, symbol TEXT, side TEXT,"
                     " amount REAL, price REAL, status TEXT)")
        backups = _Backups(guard, out)
        session = guard.start_session(host="demo", dry_run=True)
        out.say("bot", f"session {session.session_id} started")
        ok = _submit_orders(guard, conn, out)
        guard.publish_status_now()
        ok &= _operator_asks(db_url, out) == 3
        for oid, *_ in _ORDERS:
            with conn:
                conn.execute("UPDATE orders SET status='closed' WHERE id=?", (oid,))
            guard.order_event(oid, "filled")
            out.say("bot", f"order {oid} filled")
        guard.end_session()
        out.say("bot", f"session {session.session_id} ended")
        ok &= _operator_asks(db_url, out) == 0
    ok &= [m.reason for m in backups.taken] == ["session-start", "session-end"]
    out.say("demo", f"catalog {guard.catalog.directory} holds "
            f"{len(guard.catalog.manifests())} verified backups")
    return ok


def _submit_orders(guard: Guard, conn: sqlite3.Connection, out: Transcript) -> bool:
    """The bot's paper orders, each admitted first; False when one was refused."""
    ok = True
    for oid, symbol, side, amount, price in _ORDERS:
        if not guard.admit_order():
            out.say("bot", f"order {oid} refused: maintenance")
            ok = False
            continue
        with conn:
            conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, 'open')",
                         (oid, symbol, side, amount, price))
        guard.order_event(oid, "submitted", symbol=symbol, side=side)
        out.say("bot", f"order {oid} submitted: {side} {amount} {symbol} @ {price:,.0f}")
    return ok


def _operator_asks(url: str, out: Transcript) -> int:
    """``dbguard check restore`` in a separate process, told in the transcript; its exit
    code."""
    code, verdict = _operator_check(url)
    out.say("operator", "dbguard check restore  ->  " + _describe(code, verdict),
            exit_code=code, verdict=verdict)
    return code


def _operator_check(url: str) -> tuple[int, dict[str, Any]]:
    """Run ``dbguard check restore`` in a separate process, as an operator would."""
    env = dict(os.environ, DBGUARD_LOAD_PLUGINS=os.environ.get("DBGUARD_LOAD_PLUGINS", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "dbguard_plugin", "check", "restore", "--db", url, "--json"],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, {"error": proc.stderr.strip() or proc.stdout.strip()}


def _describe(code: int, verdict: dict[str, Any]) -> str:
    if "error" in verdict:
        return f"exit {code}: {verdict['error']}"
    if verdict.get("allowed"):
        return f"exit {code}: allowed"
    reasons = "\n".join(f"  - {r['message']}" for r in verdict.get("reasons", []))
    return f"exit {code}: vetoed\n{reasons}"
