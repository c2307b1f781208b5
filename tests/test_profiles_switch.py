"""Switching profiles: guarded across processes, told to hosts, safe against SIGKILL."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
from pathlib import Path

import pytest

from dbguard_plugin import hookimpl, signals
from dbguard_plugin.events import Operation
from dbguard_plugin.operations.profile_store import ProfileStore
from dbguard_plugin.settings.profile_file import BESIDE_CONFIG

CRASH_POINTS = ("switch:locked", "backup:copying", "backup:renamed", "switch:backed-up",
                "switch:written", "switch:done")
BEFORE_WRITE = {"switch:locked", "backup:copying", "backup:renamed", "switch:backed-up"}


def _make_db(path: Path, value: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(value,)] * 500)
    conn.commit()
    conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bot(tmp_path: Path) -> dict[str, Path]:
    prod, dry = tmp_path / "tradesv3.sqlite", tmp_path / "tradesv3.dryrun.sqlite"
    _make_db(prod, 1)
    _make_db(dry, 2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": f"sqlite:///{prod}"}), encoding="utf-8")
    store = ProfileStore.locate(config)
    store.update("testing", db_url=f"sqlite:///{dry}")
    store.switch("production")
    return {"config": config, "prod": prod, "dry": dry}


def _active(run_cli, config: Path) -> str:
    """What a new CLI process reports as the active profile."""
    result = run_cli("profile", "list", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    marked = [p["name"] for p in data["profiles"] if p["active"]]
    assert marked == [data["active"]], "exactly one profile is active"
    return str(data["active"])


def test_orders_in_another_process_veto_the_switch_until_they_end(
    spawn, scripts, run_cli, bot
) -> None:
    cfg = ("--config", str(bot["config"]))
    catalog = bot["prod"].with_name("tradesv3.sqlite.dbguard") / "backups"
    holder = spawn(scripts["bot_with_orders"], f"sqlite:///{bot['prod']}")
    first_backups = sorted(catalog.glob("*.json"))

    vetoed = run_cli("profile", "switch", "testing", "--yes", *cfg)
    assert vetoed.returncode == 3, vetoed.stdout + vetoed.stderr
    assert "profile_switch: vetoed" in vetoed.stderr
    assert f"2 orders in flight in pid {holder.pid}" in vetoed.stderr
    assert "A-1001" in vetoed.stderr
    assert "B-2002" in vetoed.stderr
    as_json = run_cli("profile", "switch", "testing", "--yes", *cfg, "--json")
    assert as_json.returncode == 3
    codes = {r["code"] for r in json.loads(as_json.stdout)["verdict"]["reasons"]}
    assert {"orders-in-flight", "session-active"} <= codes
    assert _active(run_cli, bot["config"]) == "production"
    assert sorted(catalog.glob("*.json")) == first_backups, "a vetoed switch backs nothing up"

    holder.send("exit")
    assert holder.wait() == 0

    done = run_cli("profile", "switch", "testing", "--yes", *cfg, "--json")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["previous"], outcome["active"]) == ("production", "testing")
    assert (catalog / f"{outcome['backup_id']}.json").exists()
    manifest = json.loads((catalog / f"{outcome['backup_id']}.json").read_text())
    assert (manifest["reason"], manifest["profile"]) == ("pre-switch", "production")
    assert _active(run_cli, bot["config"]) == "testing"  # a restarted CLI
    status = json.loads(run_cli("status", *cfg, "--json").stdout)
    assert status["database"] == f"sqlite:///{bot['dry']}"


def test_a_restarted_bot_follows_the_active_profile(spawn, run_cli, bot) -> None:
    script = """
        import sys
        from dbguard_plugin import Guard

        guard = Guard.from_config(sys.argv[1])
        print("DB", guard.config.profile, guard.location.redacted, flush=True)
        guard.close()
    """
    first = spawn(script, str(bot["config"]), ready="DB")
    assert first.output[-1] == f"DB production sqlite:///{bot['prod']}"
    assert run_cli("profile", "switch", "testing", "--yes", "--config", str(bot["config"])) \
        .returncode == 0
    second = spawn(script, str(bot["config"]), ready="DB")
    assert second.output[-1] == f"DB testing sqlite:///{bot['dry']}"


def test_switch_calls_the_refresh_hook_and_sends_the_signal(bot, register_plugin) -> None:
    refreshed: list[Operation] = []
    received: list[dict[str, object]] = []

    class Host:
        @hookimpl
        def dbguard_refresh(self, guard, operation):  # type: ignore[no-untyped-def]
            refreshed.append(operation)

    def on_switched(guard, **extra):  # type: ignore[no-untyped-def]
        received.append(extra)

    register_plugin(Host())
    signals.profile_switched.connect(on_switched)
    try:
        store = ProfileStore.locate(bot["config"])
        outcome = store.switch("testing")
    finally:
        signals.profile_switched.disconnect(on_switched)
    assert refreshed == [Operation.PROFILE_SWITCH]
    assert received == [{"previous": "production", "profile": "testing",
                         "backup_id": outcome.backup_id,
                         "database": f"sqlite:///{bot['dry']}"}]
    # a bot on the old database sees the replacement on its next tick
    generation = bot["prod"].with_name("tradesv3.sqlite.dbguard") / "generation.json"
    assert json.loads(generation.read_text())["operation"] == "profile_switch"


#: The signal scenarios in this module, for test_signals.test_every_signal_has_a_scenario.
SCENARIOS = {
    "profile-switched": test_switch_calls_the_refresh_hook_and_sends_the_signal,
}


def test_a_host_guard_with_orders_vetoes_its_own_switch(bot) -> None:
    store = ProfileStore.locate(bot["config"])
    host = store.guard()
    try:
        host.start_session("S-1")
        assert host.admit_order()
        host.order_event("o-1", "submitted", symbol="BTC/USDT", side="buy")
        from dbguard_plugin.errors import VetoedError

        with pytest.raises(VetoedError, match=r"1 order in flight in pid .* o-1"):
            store.switch("testing", guard=host)
        host.order_event("o-1", "filled")
        host.end_session()
        assert store.switch("testing", guard=host).active == "testing"
    finally:
        host.close()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_step_leaves_one_active_profile(run_cli, child_env, bot,
                                                         point: str) -> None:
    cfg = ("--config", str(bot["config"]))
    before = {name: _digest(bot[name]) for name in ("prod", "dry")}
    killed = run_cli("profile", "switch", "testing", "--yes", *cfg,
                     env=child_env(DBGUARD_CRASH_AT=point))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    expected = "production" if point in BEFORE_WRITE else "testing"
    assert _active(run_cli, bot["config"]) == expected
    # the switch never writes a database: both are exactly as they were
    assert {name: _digest(bot[name]) for name in ("prod", "dry")} == before
    leftovers = [p.name for p in bot["config"].parent.iterdir()
                 if p.name.startswith(f".tmp-{BESIDE_CONFIG}")]
    assert leftovers == []

    # the next command finds the lease free and finishes the job
    again = run_cli("profile", "switch", "testing", "--yes", *cfg, "--json")
    assert again.returncode == 0, again.stderr
    assert _active(run_cli, bot["config"]) == "testing"
    backups = run_cli("backups", "--profile", "production", *cfg, "--json")
    catalog = bot["prod"].with_name("tradesv3.sqlite.dbguard") / "backups"
    names = sorted(p.name for p in catalog.iterdir() if not p.name.startswith(".catalog"))
    assert not [n for n in names if n.startswith(".tmp-")], names
    ids = [b["id"] for b in json.loads(backups.stdout)]
    assert all((catalog / f"{i}.sqlite").exists() for i in ids)


# -- confirmation, and the first switch's warnings -------------------------------------------


def _fresh_bot(tmp_path: Path) -> tuple[str, ...]:
    """A bot config naming one database and a profiles file with no active profile."""
    db = tmp_path / "fresh.sqlite"
    _make_db(db, 3)
    config = tmp_path / "fresh.json"
    config.write_text(json.dumps({"db_url": f"sqlite:///{db}"}), encoding="utf-8")
    return ("--config", str(config))


def test_switch_without_yes_and_without_a_terminal_changes_nothing(
    run_cli, bot: dict[str, Path]
) -> None:
    cfg = ("--config", str(bot["config"]))
    catalog = bot["prod"].with_name("tradesv3.sqlite.dbguard") / "backups"
    before = sorted(catalog.glob("*.json"))
    asked = run_cli("profile", "switch", "testing", *cfg)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert asked.stderr.strip() == (
        "dbguard: Switch the active profile from production to testing? needs "
        "confirmation: pass --yes to go ahead without being asked (no terminal to ask on)")
    assert _active(run_cli, bot["config"]) == "production"
    assert sorted(catalog.glob("*.json")) == before, "nothing is backed up before a yes"

    short = run_cli("profile", "switch", "testing", "-y", *cfg)
    assert short.returncode == 0, short.stderr
    assert short.stdout.startswith("switched production -> testing; database ")
    assert _active(run_cli, bot["config"]) == "testing"
    # The active profile again: nothing changes, so nothing is asked.
    again = run_cli("profile", "switch", "testing", *cfg)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "profile testing is already active"


def test_the_first_switch_does_not_warn_about_a_shared_database(run_cli, tmp_path) -> None:
    cfg = _fresh_bot(tmp_path)
    first = run_cli("profile", "switch", "development", "--yes", *cfg)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("switched (none) -> development; database ")
    assert "same database" not in first.stdout + first.stderr
    assert "(none)" not in first.stdout.split("\n", 1)[1]
    # From one profile to another on the same database: that is worth a warning.
    second = run_cli("profile", "switch", "testing", "--yes", *cfg, "--json")
    assert second.returncode == 0, second.stderr
    (warning,) = [w for w in json.loads(second.stdout)["warnings"] if "same database" in w]
    assert warning.startswith("profiles development and testing use the same database ")
