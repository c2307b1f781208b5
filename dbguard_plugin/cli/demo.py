"""``dbguard demo``: a paper-trading bot and an operator, on a throw-away SQLite file.

The bot goes through the real hooks and the real lease; the operator is a separate
``dbguard check restore`` process, exactly as an operator would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from dbguard_plugin import signals
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config

_ORDERS = (
    ("1", "BTC/USDT", "buy", 0.01, 64_000.0),
    ("2", "ETH/USDT", "sell", 1.5, 3_400.0),
)


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


def run_demo(
    db_url: str | None = None,
    keep: bool = False,
    as_json: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the demo; return 0 when everything behaved as dbguard promises, else 1."""
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
    ok = True
    engine = create_engine(db_url)
    guard = Guard(Config(db_url=db_url, environment="production"))
    try:
        out.say("demo", f"paper-trading bot (pid {os.getpid()}) on {location.sqlite_path}")
        with engine.begin() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.execute(text(
                "CREATE TABLE orders (id TEXT PRIMARY KEY, symbol TEXT, side TEXT,"
                " amount REAL, price REAL, status TEXT)"
            ))
        def on_backup(_sender: Guard, manifest: Manifest, **extra: Any) -> None:
            backups.append(manifest)
            out.say("dbguard", f"{manifest.reason} backup {manifest.id} verified "
                    f"({manifest.size:,} bytes, sha256 {manifest.sha256[:12]}...)",
                    backup=manifest.id, reason=manifest.reason)

        def on_failure(_sender: Guard, reason: str, error: str, **extra: Any) -> None:
            out.say("dbguard", f"{reason} backup FAILED: {error}")

        backups: list[Manifest] = []
        signals.backup_finished.connect(on_backup, sender=guard)
        signals.backup_failed.connect(on_failure, sender=guard)
        session = guard.start_session(host="demo", dry_run=True)
        out.say("bot", f"session {session.session_id} started")
        for oid, symbol, side, amount, price in _ORDERS:
            if not guard.admit_order():
                out.say("bot", f"order {oid} refused: maintenance")
                ok = False
                continue
            with engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO orders VALUES (:id, :s, :side, :a, :p, 'open')"),
                    {"id": oid, "s": symbol, "side": side, "a": amount, "p": price},
                )
            guard.order_event(oid, "submitted", symbol=symbol, side=side)
            out.say("bot", f"order {oid} submitted: {side} {amount} {symbol} @ {price:,.0f}")
        guard.publish_status_now()

        code, verdict = _operator_check(db_url)
        out.say("operator", "dbguard check restore  ->  " + _describe(code, verdict),
                exit_code=code, verdict=verdict)
        ok &= code == 3

        for oid, _symbol, _side, _amount, _price in _ORDERS:
            with engine.begin() as conn:
                conn.execute(text("UPDATE orders SET status='closed' WHERE id=:id"),
                             {"id": oid})
            guard.order_event(oid, "filled")
            out.say("bot", f"order {oid} filled")
        guard.end_session()
        out.say("bot", f"session {session.session_id} ended")

        code, verdict = _operator_check(db_url)
        out.say("operator", "dbguard check restore  ->  " + _describe(code, verdict),
                exit_code=code, verdict=verdict)
        ok &= code == 0
        reasons = [m.reason for m in backups]
        ok &= reasons == ["session-start", "session-end"]
        out.say("demo", f"catalog {guard.catalog.directory} holds "
                f"{len(guard.catalog.manifests())} verified backups")
    finally:
        guard.close()
        engine.dispose()
        if workdir is not None and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    verdict_line = ("the restore waited for the orders and the session, and both session "
                    "boundaries were backed up: all as it should be")
    out.say("demo", verdict_line if ok else "something did not behave as expected")
    if as_json:
        echo(json.dumps({"ok": ok, "steps": out.steps}, indent=2, default=str))
    return 0 if ok else 1
