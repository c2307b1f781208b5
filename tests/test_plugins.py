"""Plugins: the veto hook (in-process and through an installed entry point), force and
the audit log, and every lifecycle and host hook."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pluggy
import pytest

from dbguard_plugin import Operation, OrderEvent, OrderKind, SessionInfo, hookimpl
from dbguard_plugin.core.audit import read as read_audit
from dbguard_plugin.errors import VetoedError
from dbguard_plugin.plugin.manager import pm
from dbguard_plugin.state import Snapshot

# -- a third-party plugin installed through the ``dbguard`` entry-point group ------------------

VETO_PLUGIN = '''
    from dbguard_plugin import hookimpl


    @hookimpl
    def dbguard_veto(guard, operation, state):
        return "maintenance window closed" if operation.value == "restore" else None
'''

MISSPELLED_PLUGIN = '''
    from dbguard_plugin import hookimpl


    @hookimpl
    def dbguard_vetoo(guard, operation, state):
        return "never asked"
'''


def install(site: Path, source: str, name: str = "vetoplug") -> Path:
    """Install module *name* with a ``dbguard`` entry point, as pip would, into *site*."""
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(f"[dbguard]\n{name} = {name}\n", encoding="utf-8")
    return site


@pytest.fixture
def plugin_env(tmp_path, child_env):
    """Environment for a CLI process that sees the installed plugin (none selected yet)."""

    def make(source: str = VETO_PLUGIN, **overrides: str | None) -> dict[str, str]:
        site = tmp_path / "site"
        if not site.exists():
            install(site, source)
        path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
        overrides.setdefault("DBGUARD_LOAD_PLUGINS", None)  # default: load every plugin
        return child_env(PYTHONPATH=path, **overrides)

    return make


def test_installed_plugin_vetoes_a_restore(run_cli, plugin_env, db_url):
    env = plugin_env()
    vetoed = run_cli("check", "restore", "--db", db_url, env=env)
    assert vetoed.returncode == 3, vetoed.stdout + vetoed.stderr
    assert "maintenance window closed" in vetoed.stdout

    as_json = run_cli("check", "restore", "--db", db_url, "--json", env=env)
    assert as_json.returncode == 3
    (reason,) = json.loads(as_json.stdout)["reasons"]
    assert reason == {"code": "plugin", "message": "maintenance window closed",
                      "overridable": True}

    allowed = run_cli("check", "vacuum", "--db", db_url, env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr

    status = run_cli("status", "--db", db_url, "--json", env=env)
    assert status.returncode == 0
    assert "vetoplug" in json.loads(status.stdout)["plugins"]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"DBGUARD_BLOCK_PLUGINS": "vetoplug"}, 0),
        ({"DBGUARD_BLOCK_PLUGINS": "other, vetoplug"}, 0),
        ({"DBGUARD_LOAD_PLUGINS": ""}, 0),
        ({"DBGUARD_LOAD_PLUGINS": "vetoplug"}, 3),
        ({"DBGUARD_LOAD_PLUGINS": "something-else"}, 0),
    ],
)
def test_plugin_selection_by_environment(run_cli, plugin_env, db_url, variables, expected):
    result = run_cli("check", "restore", "--db", db_url, env=plugin_env(**variables))
    assert result.returncode == expected, result.stdout + result.stderr
    assert ("maintenance window closed" in result.stdout) == (expected == 3)


def test_misspelled_hook_is_a_configuration_error(run_cli, plugin_env, db_url):
    env = plugin_env(MISSPELLED_PLUGIN)
    result = run_cli("check", "restore", "--db", db_url, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "dbguard_vetoo" in result.stderr
    assert "vetoplug" in result.stderr
    assert "DBGUARD_BLOCK_PLUGINS" in result.stderr  # says how to skip it
    # Blocking the broken plugin lets the operator work again.
    skipped = run_cli("check", "restore", "--db", db_url,
                      env=plugin_env(MISSPELLED_PLUGIN, DBGUARD_BLOCK_PLUGINS="vetoplug"))
    assert skipped.returncode == 0, skipped.stderr


# -- the veto hook in-process, through the module-level plugin manager -----------------------


class Veto:
    def __init__(self, answers: dict[str, str | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[object, Operation, Snapshot]] = []

    @hookimpl
    def dbguard_veto(self, guard, operation, state):
        self.calls.append((guard, operation, state))
        return self.answers.get(operation.value)


def test_veto_hook_in_process(guard, register_plugin):
    plugin = register_plugin(Veto({"restore": "backup running", "vacuum": None}))
    assert guard.pm is pm
    guard.admit_order()
    guard.order_event("3", "submitted")

    verdict = guard.check("restore")
    assert [r.code for r in verdict.reasons] == ["orders-in-flight", "plugin"]
    plugin_reason = verdict.reasons[1]
    assert plugin_reason.message == "backup running"
    assert plugin_reason.overridable is True
    called_guard, operation, state = plugin.calls[-1]
    assert called_guard is guard
    assert operation is Operation.RESTORE
    assert isinstance(state, Snapshot)
    assert [o.order_id for o in state.orders] == ["3"]

    guard.order_event("3", "filled")
    assert guard.check("vacuum").allowed
    assert plugin.calls[-1][1] is Operation.VACUUM


def test_veto_stops_at_the_first_answer(guard, register_plugin):
    silent = register_plugin(Veto({}))
    first = register_plugin(Veto({"move": "first says no"}))
    second = register_plugin(Veto({"move": "second says no"}))
    verdict = guard.check("move")
    # pluggy calls the last registered first; only one answer is taken.
    assert [r.message for r in verdict.reasons] == ["second says no"]
    assert len(second.calls) == 1
    assert first.calls == []
    assert silent.calls == []


def test_unregistered_plugin_no_longer_vetoes(guard):
    plugin = Veto({"delete": "no deletes today"})
    pm.register(plugin)
    try:
        assert not guard.check("delete").allowed
    finally:
        pm.unregister(plugin)
    assert guard.check("delete").allowed


def test_force_overrides_a_plugin_veto_and_is_audited(guard, register_plugin):
    register_plugin(Veto({"restore": "maintenance window closed"}))
    with pytest.raises(VetoedError) as info:
        _run(guard, "restore")
    assert info.value.exit_code == 3
    assert not guard.audit_path.exists()

    with guard.operation("restore", force=True, who="alice") as verdict:
        assert verdict.forced
        assert verdict.allowed
        assert "allowed by force" in verdict.summary()

    entries = read_audit(guard.audit_path)
    assert len(entries) == 1
    entry = entries[0]
    assert {"when", "who", "operation", "reasons_overridden"} <= set(entry)
    assert entry["who"] == "alice"
    assert entry["operation"] == "restore"
    assert entry["pid"] == os.getpid()
    assert [r["message"] for r in entry["reasons_overridden"]] == ["maintenance window closed"]
    assert stat.S_IMODE(os.stat(guard.audit_path).st_mode) == 0o600
    # The log is appended to, never rewritten.
    with guard.operation("restore", force=True, who="bob"):
        pass
    assert [e["who"] for e in read_audit(guard.audit_path)] == ["alice", "bob"]
    raw = guard.audit_path.read_text().splitlines()
    assert [json.loads(line)["who"] for line in raw] == ["alice", "bob"]


def test_force_never_overrides_orders_in_flight(guard, register_plugin):
    register_plugin(Veto({"restore": "maintenance window closed"}))
    guard.admit_order()
    guard.order_event("42", "submitted", symbol="BTC/USDT", side="buy")
    with pytest.raises(VetoedError) as info:
        guard.authorize("restore", force=True, who="mallory")
    assert info.value.exit_code == 3
    assert "cannot override" in str(info.value)
    assert "42 (BTC/USDT buy, submitted)" in str(info.value)
    assert info.value.verdict.forced is False
    assert read_audit(guard.audit_path) == []


def test_authorize_with_force_writes_the_audit_log_on_a_fresh_database(guard, register_plugin):
    """authorize(force=True) is public API: it must audit even before any lease was taken."""
    register_plugin(Veto({"migrate": "schema freeze"}))
    verdict = guard.authorize("migrate", force=True, who="carol")
    assert verdict.forced
    (entry,) = read_audit(guard.audit_path)
    assert entry["who"] == "carol"
    assert stat.S_IMODE(os.stat(guard.audit_path).st_mode) == 0o600


def test_audit_log_path_from_config(make_guard, register_plugin, db_url, tmp_path):
    from dbguard_plugin.settings.config import Config

    log = tmp_path / "audit" / "forced.jsonl"
    log.parent.mkdir()
    guard = make_guard(Config(db_url=db_url, audit_log=str(log)))
    register_plugin(Veto({"replace": "no"}))
    with guard.operation("replace", force=True, who="dave"):
        pass
    assert guard.audit_path == log
    assert [e["who"] for e in read_audit(log)] == ["dave"]


def _run(guard, operation: str) -> None:
    with guard.operation(operation):
        pass


# -- lifecycle and host hooks ------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []
        self.session_seen_while_ending: SessionInfo | None = None

    @hookimpl
    def dbguard_session_started(self, guard, session):
        self.calls.append(("dbguard_session_started", guard, session))

    @hookimpl
    def dbguard_session_ending(self, guard, session):
        # The built-in tracker runs last: the session is still active here.
        self.session_seen_while_ending = guard.state.session
        self.calls.append(("dbguard_session_ending", guard, session))

    @hookimpl
    def dbguard_order_event(self, guard, event):
        self.calls.append(("dbguard_order_event", guard, event))

    @hookimpl
    def dbguard_release_connections(self, guard, operation):
        self.calls.append(("dbguard_release_connections", guard, operation))

    @hookimpl
    def dbguard_refresh(self, guard, operation):
        self.calls.append(("dbguard_refresh", guard, operation))


def test_lifecycle_hooks_reach_a_plugin(guard, register_plugin):
    recorder = register_plugin(Recorder())
    session = guard.start_session("S-9", host="freqtrade", dry_run=True)
    assert guard.admit_order()
    guard.order_event(101, "submitted", symbol="BTC/USDT", side="buy")
    guard.order_event(OrderEvent.of("101", OrderKind.FILLED))
    ended = guard.end_session()

    assert ended == session
    assert [name for name, _, _ in recorder.calls] == [
        "dbguard_session_started", "dbguard_order_event", "dbguard_order_event",
        "dbguard_session_ending",
    ]
    assert all(called is guard for _, called, _ in recorder.calls)
    started = recorder.calls[0][2]
    assert started == session
    assert (started.session_id, started.host, started.dry_run) == ("S-9", "freqtrade", True)
    first, second = recorder.calls[1][2], recorder.calls[2][2]
    assert (first.order_id, first.kind, first.symbol, first.side) == (
        "101", OrderKind.SUBMITTED, "BTC/USDT", "buy")
    assert (second.order_id, second.kind) == ("101", OrderKind.FILLED)
    assert recorder.calls[3][2] == session
    assert recorder.session_seen_while_ending == session
    assert guard.state.session is None
    # A second end_session has no session to end: no hook call.
    assert guard.end_session() is None
    assert len(recorder.calls) == 4


def test_order_event_needs_a_kind(guard):
    with pytest.raises(TypeError, match="kind is required"):
        guard.order_event("1")


def test_host_hooks_release_connections_and_refresh(guard, register_plugin):
    recorder = register_plugin(Recorder())
    guard.pm.hook.dbguard_release_connections(guard=guard, operation=Operation.RESTORE)
    guard.pm.hook.dbguard_refresh(guard=guard, operation=Operation.RESTORE)
    assert recorder.calls == [
        ("dbguard_release_connections", guard, Operation.RESTORE),
        ("dbguard_refresh", guard, Operation.RESTORE),
    ]


def test_hook_signatures_are_validated_on_register():
    class WrongArguments:
        @hookimpl
        def dbguard_refresh(self, guard, operation, engine):
            pass

    plugin = WrongArguments()
    with pytest.raises(pluggy.PluginValidationError, match="engine"):
        pm.register(plugin)
    assert not pm.is_registered(plugin)


def test_every_hook_is_exercised_here():
    names = {name for name in dir(pm.hook) if name.startswith("dbguard_")}
    assert names == {
        "dbguard_session_started", "dbguard_session_ending", "dbguard_order_event",
        "dbguard_veto", "dbguard_release_connections", "dbguard_refresh",
    }
