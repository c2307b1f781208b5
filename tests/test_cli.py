"""The ``dbguard`` command: output, options anywhere, and the exit-code contract.

Exit codes: 0 ok, 2 usage or configuration error, 3 vetoed. Each code is checked at least
once through a real ``python -m dbguard_plugin`` process; finer points use CliRunner.
"""

from __future__ import annotations

import json

import pytest

from dbguard_plugin import __version__
from dbguard_plugin.events import Operation

SECRET_URL = "postgresql://u:s3cret@127.0.0.1/x"


# -- status -------------------------------------------------------------------------------


def test_status_human_and_json_with_a_bot_holding_the_lease(spawn, scripts, run_cli, db_url):
    bot = spawn(scripts["bot_with_orders"], db_url)

    human = run_cli("status", "--db", db_url)
    assert human.returncode == 0, human.stderr
    assert f"database:    {db_url}" in human.stdout
    assert "environment: production" in human.stdout
    assert "orders lock: held" in human.stdout
    assert "session:     held" in human.stdout
    assert f"bot pid {bot.pid}" in human.stdout
    assert "session S-7" in human.stdout
    assert "A-1001, B-2002" in human.stdout
    assert "plugins:     dbguard_plugin.tracking" in human.stdout

    as_json = run_cli("status", "--json", "--db", db_url)
    assert as_json.returncode == 0
    data = json.loads(as_json.stdout)
    assert {"database", "environment", "lease", "this_process", "plugins"} <= set(data)
    assert data["database"] == db_url
    assert data["lease"]["orders"] == "held"
    assert data["lease"]["session"] == "held"
    (holder,) = data["lease"]["holders"]
    assert holder["pid"] == bot.pid
    assert holder["role"] == "bot"
    assert [o["order_id"] for o in holder["orders_in_flight"]] == ["A-1001", "B-2002"]
    assert holder["session"]["session_id"] == "S-7"
    # The status process itself trades nothing.
    assert data["this_process"]["orders_in_flight"] == []
    assert data["this_process"]["session"] is None
    assert "dbguard_plugin.tracking" in data["plugins"]


def test_status_of_an_idle_database(run_cli, db_url):
    result = run_cli("status", "--db", db_url, "--json", in_process=True)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["lease"] == {"orders": "free", "session": "free", "holders": []}
    assert data["enabled"] is True


def test_status_shows_an_operation(spawn, scripts, run_cli, db_url):
    operation = spawn(scripts["operation_holder"], db_url, "vacuum")
    result = run_cli("status", "--db", db_url, in_process=True)
    assert result.exit_code == 0
    assert f"pid {operation.pid}" in result.stdout
    assert "vacuum" in result.stdout
    assert "orders lock: held" in result.stdout


# -- check: the exit-code contract --------------------------------------------------------


def test_check_exit_codes_through_real_processes(spawn, scripts, run_cli, db_url):
    free = run_cli("check", "restore", "--db", db_url)
    assert free.returncode == 0
    assert free.stdout.strip() == "restore: allowed"
    assert free.stderr == ""

    bot = spawn(scripts["bot_with_orders"], db_url)
    vetoed = run_cli("check", "restore", "--db", db_url)
    assert vetoed.returncode == 3
    assert vetoed.stdout.startswith("restore: vetoed")
    vetoed_json = run_cli("--json", "check", "restore", "--db", db_url)
    assert vetoed_json.returncode == 3
    body = json.loads(vetoed_json.stdout)
    assert body["allowed"] is False
    assert body["forced"] is False
    assert {r["code"] for r in body["reasons"]} == {"orders-in-flight", "session-active"}
    bot.kill()


def test_bad_operation_name_is_a_usage_error(run_cli, db_url):
    result = run_cli("check", "reboot", "--db", db_url)
    assert result.returncode == 2
    assert "unknown operation 'reboot'" in result.stderr
    for op in Operation:
        assert op.value in result.stderr
    assert result.stdout == ""


def test_bad_operation_name_as_json(run_cli, db_url):
    result = run_cli("check", "reboot", "--db", db_url, "--json", in_process=True)
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["exit_code"] == 2
    assert "restore" in body["error"]


def test_no_database_is_a_usage_error_naming_both_options(run_cli, tmp_path):
    result = run_cli("check", "restore")
    assert result.returncode == 2
    assert "--db" in result.stderr
    assert "--config" in result.stderr
    status = run_cli("status")
    assert status.returncode == 2
    assert "--db" in status.stderr
    assert "--config" in status.stderr


def test_database_from_environment_variable(run_cli, child_env, db_url):
    result = run_cli("status", "--json", env=child_env(DBGUARD_DB=db_url), in_process=True)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["database"] == db_url


@pytest.mark.parametrize(
    "layout",
    [
        ["--db", "{db}", "--config", "{config}", "check", "vacuum"],
        ["check", "vacuum", "--db", "{db}", "--config", "{config}"],
        ["--db", "{db}", "check", "vacuum", "--config", "{config}"],
        ["--config", "{config}", "check", "--db", "{db}", "vacuum"],
        ["--json", "--config", "{config}", "check", "vacuum", "--db", "{db}"],
    ],
)
def test_options_before_and_after_the_command(spawn, scripts, run_cli, tmp_path, db_url, layout):
    # Without --db nothing names the database (exit 2); with a "testing" config and a
    # session active, vacuum is vetoed (exit 3) and restore only warns (exit 0); under
    # the default production rules both would be vetoed.
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"dbguard": {"environment": "testing"}}))
    spawn(scripts["bot_with_session"], db_url)
    args = [part.format(db=db_url, config=config) for part in layout]
    result = run_cli(*args, in_process=True)
    assert result.exit_code == 3, result.output
    assert "testing environment" in result.output

    allowed = run_cli(*[a.replace("vacuum", "restore") for a in args], in_process=True)
    assert allowed.exit_code == 0, allowed.output  # restore only warns in testing


def test_db_option_overrides_the_config(run_cli, tmp_path, db_url):
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"db_url": "sqlite:////nonexistent/elsewhere.sqlite"}))
    result = run_cli("status", "--json", "--config", str(config), "--db", db_url, in_process=True)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["database"] == db_url


def test_config_error_exits_2(run_cli, tmp_path, db_url):
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"dbguard": {"environment": "staging"}}))
    result = run_cli("check", "restore", "--config", str(config), "--db", db_url)
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "dbguard.environment" in result.stderr
    assert "'staging'" in result.stderr
    assert "development, testing, production" in result.stderr
    assert result.stdout == ""


def test_missing_config_file_exits_2(run_cli, tmp_path):
    result = run_cli("status", "--config", str(tmp_path / "missing.json"), in_process=True)
    assert result.exit_code == 2
    assert "no such config file" in result.stderr


def test_unknown_option_is_a_usage_error(run_cli):
    result = run_cli("check", "restore", "--frobnicate")
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr


#: Every command that replaces or deletes something: each takes --yes and -y.
DELETING = (("restore",), ("rollback",), ("move",), ("prune",), ("convert",),
            ("profile", "delete"), ("profile", "switch"))


@pytest.mark.parametrize("path", DELETING, ids=" ".join)
def test_every_deleting_command_takes_yes_and_y(path, run_cli) -> None:
    for flag in ("--yes", "-y"):
        result = run_cli(*path, flag, "--help", in_process=True)
        assert result.exit_code == 0, result.output
    assert "-y, --yes" in run_cli(*path, "--help", in_process=True).stdout


def test_version(run_cli):
    result = run_cli("--version", in_process=True)
    assert result.exit_code == 0
    assert __version__ in result.stdout


# -- secrets --------------------------------------------------------------------------------


def test_password_is_never_printed_by_status_or_check(run_cli, tmp_path):
    # A server database's lease lives on the server (docs/servers.rst): with no such
    # login there, status and check fail closed (exit 1), naming the server, never the
    # password.
    human = run_cli("status", "--db", SECRET_URL)
    assert human.returncode == 1, human.stderr
    assert "postgresql://u:***@127.0.0.1/x" in human.stderr
    assert "s3cret" not in human.stdout + human.stderr
    as_json = run_cli("status", "--json", "--db", SECRET_URL, in_process=True)
    assert as_json.exit_code == 1
    assert "postgresql://u:***@127.0.0.1/x" in json.loads(as_json.stdout)["error"]
    assert "s3cret" not in as_json.output
    for args in (["check", "restore", "--db", SECRET_URL],
                 ["check", "restore", "--json", "--db", SECRET_URL]):
        result = run_cli(*args, in_process=True)
        assert result.exit_code == 1, result.output
        assert "s3cret" not in result.output
    # The per-user state directory for a server database is named without the password.
    from dbguard_plugin.location import locate

    state_dir = str(locate(SECRET_URL).state_dir)
    assert "s3cret" not in state_dir


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret@127.0.0.1:notaport/x",  # parsed, then rejected
        "postgres ql://u:s3cret@127.0.0.1/x",  # not a URL at all
        "postgresql//u:s3cret@127.0.0.1/x",  # a typo: no "://"
    ],
)
def test_password_is_never_printed_in_url_errors(run_cli, url):
    for args in (["check", "restore", "--db", url], ["status", "--json", "--db", url]):
        result = run_cli(*args, in_process=True)
        assert result.exit_code == 2, result.output
        assert "s3cret" not in result.output


def test_password_is_never_printed_in_config_errors(run_cli, tmp_path, db_url):
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"dbguard": {"db_url": "postgresql//u:s3cret@127.0.0.1/x"}}))
    result = run_cli("check", "restore", "--config", str(config), in_process=True)
    assert result.exit_code == 2
    assert "dbguard.db_url" in result.stderr
    assert "s3cret" not in result.output
