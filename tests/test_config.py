"""Configuration from the bot's own config file: JSON, freqtrade's db_url, TOML, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbguard_plugin import Guard, Operation
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.settings.config import Config


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_json_with_a_dbguard_object(tmp_path, db_url):
    path = write_json(tmp_path / "config.json", {
        "max_open_trades": 3,  # the bot's own keys are ignored
        "dbguard": {
            "enabled": True,
            "db_url": db_url,
            "environment": "testing",
            "state_dir": str(tmp_path / "state"),
            "session_vetoes": ["restore", "profile-switch"],
            "maintenance_wait": 2.5,
            "audit_log": str(tmp_path / "audit.jsonl"),
        },
    })
    config = Config.load(path)
    assert config == Config(
        enabled=True, db_url=db_url, environment="testing", state_dir=str(tmp_path / "state"),
        session_vetoes=(Operation.RESTORE, Operation.PROFILE_SWITCH), maintenance_wait=2.5,
        audit_log=str(tmp_path / "audit.jsonl"),
    )
    assert config.source == str(path)
    assert config.vetoed_by_session == (Operation.RESTORE, Operation.PROFILE_SWITCH)


def test_defaults():
    config = Config()
    assert config.enabled is True
    assert config.environment == "production"
    assert set(config.vetoed_by_session) == set(Operation)
    assert config.maintenance_wait == 0.0


def test_freqtrade_top_level_db_url_is_the_fallback(tmp_path, db_url):
    freqtrade = write_json(tmp_path / "config.json", {
        "db_url": db_url, "dry_run": True, "dbguard": {"environment": "development"},
    })
    config = Config.load(freqtrade)
    assert config.db_url == db_url
    assert config.environment == "development"

    no_section = write_json(tmp_path / "plain.json", {"db_url": db_url})
    assert Config.load(no_section).db_url == db_url

    own = write_json(tmp_path / "own.json", {
        "db_url": "sqlite:////ignored.sqlite", "dbguard": {"db_url": db_url},
    })
    assert Config.load(own).db_url == db_url


def test_toml_dbguard_table(tmp_path, db_url):
    path = tmp_path / "bot.toml"
    path.write_text(
        "[bot]\nname = 'x'\n\n"
        f"[dbguard]\ndb_url = '{db_url}'\nenvironment = 'development'\n"
        "session_vetoes = ['vacuum']\nmaintenance_wait = 3\n",
        encoding="utf-8",
    )
    config = Config.load(path)
    assert config.db_url == db_url
    assert config.environment == "development"
    assert config.session_vetoes == (Operation.VACUUM,)
    assert config.maintenance_wait == 3.0


def test_content_decides_when_the_suffix_does_not(tmp_path, db_url):
    toml = tmp_path / "bot.conf"
    toml.write_text(f"[dbguard]\ndb_url = '{db_url}'\n", encoding="utf-8")
    assert Config.load(toml).db_url == db_url
    as_json = write_json(tmp_path / "bot.cfg", {"dbguard": {"db_url": db_url}})
    assert Config.load(as_json).db_url == db_url


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("enabled", "yes", "true or false"),
        ("enabled", 1, "true or false"),
        ("environment", "staging", "one of development, testing, production"),
        ("maintenance_wait", -1, "seconds from 0 to 3600"),
        ("maintenance_wait", 7200, "seconds from 0 to 3600"),
        ("maintenance_wait", True, "seconds from 0 to 3600"),
        ("maintenance_wait", "5", "seconds from 0 to 3600"),
        ("session_vetoes", "restore", "a list of operations"),
        ("session_vetoes", ["restore", "reboot"], "a list of operations"),
        ("session_vetoes", [1], "a list of operations"),
        ("state_dir", "", "a non-empty string"),
        ("state_dir", 5, "a non-empty string"),
        ("audit_log", ["x"], "a non-empty string"),
        ("db_url", 5, "SQLAlchemy URL"),
    ],
)
def test_wrong_types_name_file_key_value_and_expectation(tmp_path, key, value, expected):
    path = write_json(tmp_path / "config.json", {"dbguard": {key: value}})
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert f"dbguard.{key}" in message
    assert repr(value) in message
    assert expected in message
    assert info.value.exit_code == 2


def test_db_url_that_is_not_a_url(tmp_path):
    path = write_json(tmp_path / "config.json", {"dbguard": {"db_url": "tradesv3.sqlite"}})
    with pytest.raises(ConfigError, match=r"dbguard\.db_url = 'tradesv3\.sqlite' is invalid"):
        Config.load(path)


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path):
    path = write_json(tmp_path / "config.json", {"dbguard": {"enviroment": "testing"}})
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "dbguard.enviroment" in message
    assert "did you mean 'environment'" in message
    assert "known keys:" in message


def test_unknown_key_in_toml(tmp_path):
    path = tmp_path / "bot.toml"
    path.write_text("[dbguard]\nmaintenance_window = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key dbguard\.maintenance_window"):
        Config.load(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{\"dbguard\": {", "not valid JSON at line 1"),
        ("bad.toml", "[dbguard\n", "not valid TOML"),
        ("bad.conf", "neither json = nor toml [", "not valid TOML"),
        ("list.json", "[1, 2]", "expected an object at the top level"),
        ("section.json", "{\"dbguard\": [1]}", "'dbguard' must be an object/table"),
    ],
)
def test_unreadable_documents(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        Config.load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        Config.load(tmp_path / "nope.json")


def test_config_errors_exit_2_through_the_cli(run_cli, tmp_path):
    path = write_json(tmp_path / "config.json", {"dbguard": {"maintenance_wait": "soon"}})
    result = run_cli("status", "--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "dbguard.maintenance_wait = 'soon'" in result.stderr
    assert "seconds from 0 to 3600" in result.stderr


def test_config_drives_the_guard(make_guard, tmp_path, db_url):
    state = tmp_path / "custom-state"
    path = write_json(tmp_path / "config.json", {
        "db_url": db_url,
        "dbguard": {"state_dir": str(state), "environment": "production",
                    "session_vetoes": ["delete"]},
    })
    guard = Guard.from_config(path)
    try:
        assert guard.location.state_dir == state
        guard.start_session("S-c")
        assert (state / "session").exists()
        assert guard.check("delete").reasons[0].code == "session-active"
        assert guard.check("restore").allowed  # the configured list replaces production's
    finally:
        guard.close()


def test_disabled_guard_takes_no_lease(tmp_path, db_url, db_path, run_cli, spawn, state_dir):
    path = write_json(tmp_path / "config.json", {"db_url": db_url,
                                                   "dbguard": {"enabled": False}})
    bot = spawn(DISABLED_BOT, str(path))
    assert bot.expect("ADMITTED") == "ADMITTED True"
    checked = run_cli("check", "restore", "--db", db_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not state_dir.exists()
    assert not db_path.exists()


DISABLED_BOT = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard.from_config(sys.argv[1])
    assert not guard.enabled
    session = guard.start_session("S-off")
    admitted = guard.admit_order()
    guard.order_event("1", "submitted", symbol="BTC/USDT", side="buy")
    guard.order_event("2", "submitted", symbol="ETH/USDT", side="sell")
    guard.publish_status_now()
    print("READY", flush=True)
    print("ADMITTED", admitted, flush=True)
    sys.stdin.readline()
"""


def test_disabled_guard_lifecycle_calls_are_no_ops(make_guard, db_url, state_dir):
    guard = make_guard(Config(db_url=db_url, enabled=False))
    session = guard.start_session("S-off")
    assert session.session_id == "S-off"
    assert guard.admit_order() is True
    guard.order_event("1", "submitted")
    guard.reconcile({"2": ("BTC/USDT", "buy")})
    guard.withdraw_admission()
    assert guard.end_session() is None
    assert guard.state.snapshot().orders == ()
    assert not state_dir.exists()
    assert guard.status()["enabled"] is False
