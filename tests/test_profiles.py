"""Environment profiles: names, the profiles file, the Python API and the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from dbguard_plugin.errors import ConfigError, UnsafePathError, VetoedError
from dbguard_plugin.operations.profile_store import ProfileStore
from dbguard_plugin.settings.config import Config, resolve
from dbguard_plugin.settings.profile_file import BESIDE_CONFIG, ENV
from dbguard_plugin.settings.profiles import Profile, validate_name

BAD_NAMES = {
    "../x": "path separator or '..'",
    "": "it is empty",
    "a" * 300: "300 characters long",
    "ab\x01cd": "control character",
    "tab\there": "control character",
    "a/b": "path separator",
    "live env": "' '",
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _make_db(path: Path, value: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    conn.commit()
    conn.close()


def _value(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT x FROM t").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def bot(tmp_path: Path) -> dict[str, Path]:
    """A bot config with a production database, and a dry-run and a dev database."""
    prod, dry, dev = (tmp_path / n for n in ("tradesv3.sqlite", "tradesv3.dryrun.sqlite",
                                              "dev.sqlite"))
    _make_db(prod, 1)
    _make_db(dry, 2)
    _make_db(dev, 3)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": f"sqlite:///{prod}"}), encoding="utf-8")
    return {"config": config, "prod": prod, "dry": dry, "dev": dev}


@pytest.fixture
def store(bot: dict[str, Path]) -> ProfileStore:
    store = ProfileStore.locate(bot["config"])
    store.create(Profile("spare", kind="development"))  # writes the file
    store.delete("spare")
    store.update("testing", db_url=f"sqlite:///{bot['dry']}")
    store.update("development", db_url=f"sqlite:///{bot['dev']}")
    return store


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_bad_names_are_refused_with_what_is_wrong_and_what_is_allowed(name: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        validate_name(name)
    message = str(info.value)
    assert BAD_NAMES[name] in message
    assert "letters, digits, '-' and '_', 1 to 64 characters" in message
    assert len(message) < 300, "a 300-character name must not be echoed whole"


@pytest.mark.parametrize("name", ["production", "paper-2", "live_EU", "x", "a" * 64])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_cli_refuses_bad_names(run_cli, bot, name: str) -> None:
    result = run_cli("profile", "create", name, "--config", str(bot["config"]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a valid profile name" in result.stderr
    assert not (bot["config"].parent / BESIDE_CONFIG).exists()


# -- a fresh install ------------------------------------------------------------------------


def test_fresh_install_shows_the_three_standard_profiles(run_cli, bot) -> None:
    result = run_cli("profile", "list", "--config", str(bot["config"]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["name"] for p in data["profiles"]] == ["development", "testing", "production"]
    assert [p["kind"] for p in data["profiles"]] == ["development", "testing", "production"]
    assert [p["effective_strictness"] for p in data["profiles"]] == [
        "relaxed", "standard", "strict"]
    assert data["active"] is None
    assert data["exists"] is False
    assert data["file"] == str(bot["config"].parent / BESIDE_CONFIG)
    human = run_cli("profile", "list", "--config", str(bot["config"]))
    assert "development" in human.stdout
    assert "no active profile" in human.stdout


def test_without_a_profiles_file_the_config_alone_applies(bot) -> None:
    assert resolve(bot["config"]) == Config.load(bot["config"])
    other = f"sqlite:///{bot['dry']}"
    assert resolve(bot["config"], other).db_url == other
    assert resolve(None, other) == Config(db_url=other)


# -- the file -------------------------------------------------------------------------------


def test_file_beside_the_config_is_private_and_atomic(store, bot) -> None:
    path = bot["config"].parent / BESIDE_CONFIG
    assert store.path == path
    assert _mode(path) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    # a writer SIGKILLed between its write and its rename left this; the next write removes it
    stale = path.with_name(f".tmp-{path.name}.999999999")
    stale.write_text("garbage", encoding="utf-8")
    assert store.active_name() is None  # never read
    store.update("production", keep_last=20)
    assert not stale.exists()


def test_user_config_dir_is_used_without_a_config(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    store = ProfileStore.locate(None)
    assert store.path == tmp_path / "xdg" / "dbguard" / "profiles.toml"
    store.create(Profile("paper", kind="testing"))
    assert _mode(store.path.parent) == 0o700
    assert _mode(store.path) == 0o600


def test_env_names_another_file(tmp_path, monkeypatch, bot) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "elsewhere.toml"))
    assert ProfileStore.locate(bot["config"]).path == tmp_path / "elsewhere.toml"


def test_a_damaged_file_is_reported_with_its_name(store) -> None:
    store.path.write_text('active = "nope"\n[profiles.production]\nkind = "production"\n',
                          encoding="utf-8")
    with pytest.raises(ConfigError, match=r"profiles.toml: active = 'nope' names no profile"):
        store.read()
    store.path.write_text("[profiles.production]\nkind = 'prod'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="kind = 'prod' is invalid: expected one of"):
        store.read()
    store.path.write_text("not toml [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a valid profiles file"):
        store.read()


#: Profiles files an operator's editor, another dbguard or an attacker could leave, and
#: what the error says about each.
MALFORMED_FILES = {
    "nested": ("format = 1\nx = " + "[" * 50_000 + "]" * 50_000 + "\n",
               "not a valid profiles file (nested too deeply)"),
    "strictness-table": ("[profiles.production]\nstrictness = {a = 1}\n",
                         "strictness = {'a': 1} is invalid"),
    "kind-list": ("[profiles.production]\nkind = [1]\n", "kind = [1] is invalid"),
    "newline-url": ('[profiles.dev]\ndb_url = "sqlite:////tmp/a\\nb.sqlite"\n',
                    "a database URL has no control characters"),
    "nul-url": ('[profiles.dev]\ndb_url = "sqlite:////tmp/a\\u0000b"\n',
                "a database URL has no control characters"),
    "tab-catalog": ('[profiles.dev]\ncatalog_dir = "/tmp/c\\td"\n',
                    "without control characters"),
    "format-text": ('format = "1"\n', "format = '1' is invalid: expected 1"),
    "format-newer": ("format = 2\n", "format 2 is newer than this dbguard reads (1)"),
    "active-alone": ("active = 7\n", "active = 7 names no profile in the file; remove"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FILES))
def test_a_malformed_profiles_file_is_exit_2_naming_it(case, run_cli, bot) -> None:
    text, said = MALFORMED_FILES[case]
    path = bot["config"].parent / BESIDE_CONFIG
    path.write_text(text, encoding="utf-8")
    for args in (("profile", "list"), ("status",), ("profile", "switch", "development",
                                                    "--yes")):
        result = run_cli(*args, "--config", str(bot["config"]))
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"{path}: " in result.stderr
        assert said in result.stderr, result.stderr
    assert path.read_text(encoding="utf-8") == text  # nothing rewrote it


def test_a_profile_command_refuses_a_url_with_a_line_break(run_cli, bot) -> None:
    result = run_cli("profile", "create", "spare", "--db-url", "sqlite:////tmp/a\nb",
                     "--config", str(bot["config"]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "a database URL has no control characters" in result.stderr
    assert "spare" not in run_cli("profile", "list", "--config", str(bot["config"])).stdout


def test_passwords_never_shown(store, run_cli, bot) -> None:
    store.create(Profile("pg", kind="testing",
                         db_url="postgresql+psycopg://bot:s3cret@db.internal/trades"))
    for args in (("list",), ("show", "pg"), ("list", "--json"), ("show", "pg", "--json")):
        result = run_cli("profile", *args, "--config", str(bot["config"]))
        assert result.returncode == 0, result.stderr
        assert "s3cret" not in result.stdout + result.stderr
        assert "bot:***@db.internal" in result.stdout


# -- the API --------------------------------------------------------------------------------


def test_api_create_update_delete(store, bot) -> None:
    created = store.create(Profile("paper", kind="testing", db_url=f"sqlite:///{bot['dry']}",
                                   keep_last=3, description="dry-run of the live bot"))
    assert store.get("paper") == created
    with pytest.raises(ConfigError, match="exists already"):
        store.create(Profile("paper"))
    updated = store.update("paper", strictness="strict", keep_last=None)
    assert updated.strictness == "strict"
    assert updated.keep_last is None
    assert store.config("paper").session_vetoes == updated.session_vetoes
    with pytest.raises(ConfigError, match="keep_daily = -1 is invalid"):
        store.update("paper", keep_daily=-1)
    with pytest.raises(ConfigError, match=r"db_url .* is invalid"):
        store.update("paper", db_url="tradesv3.sqlite")
    outcome = store.delete("paper")
    assert outcome.deleted == ()
    assert bot["dry"].exists(), "delete never removes a database unless asked"
    with pytest.raises(ConfigError, match="no profile 'paper'"):
        store.get("paper")


def test_delete_refuses_the_active_and_production_profiles(store, bot) -> None:
    store.switch("testing")
    with pytest.raises(ConfigError, match="is the active profile"):
        store.delete("testing")
    with pytest.raises(ConfigError, match="production profile; deleting it needs --force"):
        store.delete("production")
    store.create(Profile("live-eu", kind="production"))
    with pytest.raises(ConfigError, match="needs --force"):
        store.delete("live-eu")
    store.delete("live-eu", force=True)
    assert bot["prod"].exists()


def test_delete_data_removes_only_what_the_profile_owns(store, bot) -> None:
    guard = store.guard("development")
    guard.backup("manual")
    catalog = guard.catalog.directory
    guard.close()
    with pytest.raises(ConfigError, match="uses the bot config's database"):
        store.delete("production", force=True, delete_data=True)
    outcome = store.delete("development", delete_data=True)
    assert str(bot["dev"]) in outcome.deleted
    assert str(catalog) in outcome.deleted
    assert not bot["dev"].exists()
    assert not catalog.exists()
    assert bot["prod"].exists()
    assert bot["dry"].exists()


def test_each_profile_has_its_own_catalog(store, bot) -> None:
    dirs = {store.config(name).backup_dir for name in ("development", "testing")}
    prod = store.config("production")
    assert prod.backup_dir is None  # the default <database>.dbguard/backups, as before
    store.update("testing", db_url=None)  # shares production's database now
    shared = store.config("testing").backup_dir
    assert shared is not None
    assert shared.endswith("backups-testing")
    assert len(dirs | {shared, "default"}) == 4


def test_profile_settings_apply(store, bot) -> None:
    store.update("testing", keep_last=2, keep_daily=1, keep_weekly=0,
                 require_backup_before_session=True,
                 catalog_dir="backups/paper")
    config = store.config("testing")
    assert (config.keep_last, config.keep_daily, config.keep_weekly) == (2, 1, 0)
    assert config.requires_backup_before_session is True
    assert config.backup_dir == str(bot["config"].parent / "backups" / "paper")
    assert config.db_url == f"sqlite:///{bot['dry']}"
    assert config.environment == "testing"
    assert config.profile == "testing"


def test_explicit_db_that_contradicts_the_profile_is_an_error(store, bot) -> None:
    with pytest.raises(ConfigError, match="is not the database of profile testing"):
        resolve(bot["config"], f"sqlite:///{bot['prod']}", "testing")


# -- strictness -----------------------------------------------------------------------------


def test_development_session_only_warns_but_orders_still_veto(store, bot, spawn,
                                                              scripts) -> None:
    store.switch("development")
    session = spawn(scripts["bot_with_session"], f"sqlite:///{bot['dev']}")
    guard = store.guard()
    try:
        verdict = guard.check("restore")
        assert verdict.allowed
        assert any("session is active" in w for w in verdict.warnings)
        assert guard.check("profile_switch").allowed
    finally:
        guard.close()
    session.send("exit")
    assert session.wait() == 0
    orders = spawn(scripts["bot_with_orders"], f"sqlite:///{bot['dev']}")
    with pytest.raises(VetoedError, match="2 orders in flight"):
        store.switch("testing")
    assert store.active_name() == "development"
    orders.send("exit")
    assert orders.wait() == 0
    assert store.switch("testing").active == "testing"


def test_production_session_vetoes_a_switch(store, bot, spawn, scripts, run_cli) -> None:
    store.switch("production")
    session = spawn(scripts["bot_with_session"], f"sqlite:///{bot['prod']}")
    result = run_cli("profile", "switch", "testing", "--yes", "--config", str(bot["config"]))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "session S-idle" in result.stderr
    assert "production environment" in result.stderr
    assert store.active_name() == "production"
    session.send("exit")
    assert session.wait() == 0


# -- cross-profile restores -----------------------------------------------------------------


def test_development_backup_into_production_needs_from_profile_and_force(
    store, bot, run_cli
) -> None:
    store.switch("production")
    cfg = ("--config", str(bot["config"]))
    made = run_cli("backup", "--profile", "development", *cfg, "--json")
    assert made.returncode == 0, made.stderr
    manifest = json.loads(made.stdout)
    assert manifest["profile"] == "development"
    backup_id = manifest["id"]

    plain = run_cli("restore", backup_id, "--yes", *cfg)
    assert plain.returncode == 2, plain.stderr
    assert "--from-profile development and --force" in plain.stderr
    assert _value(bot["prod"]) == 1

    named = run_cli("restore", backup_id, "--yes", "--from-profile", "development", *cfg,
                    "--json")
    assert named.returncode == 3, named.stdout + named.stderr
    reasons = json.loads(named.stdout)["verdict"]["reasons"]
    assert [r["code"] for r in reasons] == ["cross-profile"]
    assert _value(bot["prod"]) == 1
    assert not (bot["prod"].with_name("tradesv3.sqlite.dbguard") / "backups" /
                f"{backup_id}.json").exists(), "a refused restore copies nothing"

    forced_only = run_cli("restore", backup_id, "--yes", "--force", *cfg)
    assert forced_only.returncode == 2
    assert _value(bot["prod"]) == 1

    both = run_cli("restore", backup_id, "--yes", "--from-profile", "development", "--force",
                   *cfg, "--json")
    assert both.returncode == 0, both.stdout + both.stderr
    assert _value(bot["prod"]) == 3
    # the copy in production's catalog remembers where it came from
    again = run_cli("restore", backup_id, "--yes", *cfg)
    assert again.returncode == 2
    assert "--from-profile development" in again.stderr
    audit = (bot["prod"].with_name("tradesv3.sqlite.dbguard") / "audit.jsonl").read_text()
    assert "cross-profile" in audit


def test_testing_backup_into_development_needs_only_from_profile(store, bot, run_cli) -> None:
    store.switch("development")
    cfg = ("--config", str(bot["config"]))
    backup_id = json.loads(run_cli("backup", "--profile", "testing", *cfg, "--json")
                           .stdout)["id"]
    refused = run_cli("restore", backup_id, "--yes", *cfg)
    assert refused.returncode == 2
    assert "--from-profile testing" in refused.stderr
    done = run_cli("restore", backup_id, "--yes", "--from-profile", "testing", *cfg)
    assert done.returncode == 0, done.stderr
    assert _value(bot["dev"]) == 2


# -- the CLI commands -----------------------------------------------------------------------


def test_cli_create_update_show_switch_delete(run_cli, bot) -> None:
    cfg = ("--config", str(bot["config"]))
    created = run_cli("profile", "create", "paper", "--kind", "testing", "--db-url",
                      f"sqlite:///{bot['dry']}", "--keep-last", "5", *cfg, "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["keep_last"] == 5
    updated = run_cli("profile", "update", "paper", "--strictness", "strict", "--unset",
                      "keep_last", *cfg, "--json")
    assert updated.returncode == 0, updated.stderr
    data = json.loads(updated.stdout)
    assert data["strictness"] == "strict"
    assert data["keep_last"] is None
    nothing = run_cli("profile", "update", "paper", *cfg)
    assert nothing.returncode == 2
    assert "nothing to change" in nothing.stderr

    switched = run_cli("profile", "switch", "paper", "--yes", *cfg, "--json")
    assert switched.returncode == 0, switched.stderr
    outcome = json.loads(switched.stdout)
    assert outcome["active"] == "paper"
    assert outcome["previous"] is None
    assert outcome["backup_id"].endswith("-pre-switch")

    shown = run_cli("profile", "show", *cfg, "--json")
    assert json.loads(shown.stdout)["name"] == "paper"
    assert json.loads(shown.stdout)["resolved"]["database"] == f"sqlite:///{bot['dry']}"
    status = run_cli("status", *cfg, "--json")
    assert json.loads(status.stdout)["profile"] == "paper"
    assert json.loads(status.stdout)["database"] == f"sqlite:///{bot['dry']}"

    active = run_cli("profile", "delete", "paper", *cfg)
    assert active.returncode == 2
    assert "is the active profile" in active.stderr
    assert run_cli("profile", "switch", "development", "--yes", *cfg).returncode == 0
    deleted = run_cli("profile", "delete", "paper", *cfg, "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert str(bot["dry"]) in json.loads(deleted.stdout)["kept"]
    assert bot["dry"].exists()
    asked = run_cli("profile", "delete", "testing", "--delete-data", *cfg)
    assert asked.returncode == 2
    assert "--yes" in asked.stderr


def test_profile_option_selects_without_switching(store, bot, run_cli) -> None:
    cfg = ("--config", str(bot["config"]))
    result = run_cli("status", "--profile", "testing", *cfg, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == f"sqlite:///{bot['dry']}"
    assert store.active_name() is None
    unknown = run_cli("status", "--profile", "nope", *cfg)
    assert unknown.returncode == 2
    assert "no profile 'nope'" in unknown.stderr
    bad = run_cli("check", "restore", "--profile", "../x", *cfg)
    assert bad.returncode == 2
    assert "not a valid profile name" in bad.stderr


def test_a_symlinked_profiles_file_is_refused(store, tmp_path) -> None:
    real = tmp_path / "elsewhere.toml"
    real.write_bytes(store.path.read_bytes())
    store.path.unlink()
    store.path.symlink_to(real)
    with pytest.raises(UnsafePathError, match="symlink"):
        store.read()


def test_profile_values_are_checked_when_built() -> None:
    with pytest.raises(ConfigError, match="kind = 'prod' is invalid: expected one of"):
        Profile("live", kind="prod")
    with pytest.raises(ConfigError, match="strictness = 'lax' is invalid"):
        Profile("live", strictness="lax")
    assert Profile("live", kind="custom", strictness="relaxed").environment == "development"
    assert Profile("live").environment == "production"


def test_desktop_host_without_a_bot_config(tmp_path, monkeypatch) -> None:
    """A host whose profiles all name their databases: the first switch guards and backs
    up the new profile's database, and a new store reads the switch back."""
    monkeypatch.setenv(ENV, str(tmp_path / "app" / "profiles.toml"))
    live, paper = tmp_path / "live.sqlite", tmp_path / "paper.sqlite"
    _make_db(live, 7)
    _make_db(paper, 8)
    store = ProfileStore.locate()
    store.update("production", db_url=f"sqlite:///{live}")
    store.create(Profile("paper", kind="testing", db_url=f"sqlite:///{paper}"))
    first = store.switch("paper")
    assert first.previous is None
    assert first.backup_id.endswith("-pre-switch")
    assert ProfileStore.locate().active_name() == "paper"
    second = store.switch("production")
    assert second.previous_database == f"sqlite:///{paper}"
    guard = store.guard()
    try:
        assert guard.location.sqlite_path == live
        assert guard.config.environment == "production"
    finally:
        guard.close()
