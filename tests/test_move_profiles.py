"""``dbguard move`` with profiles: the bot's config, the profiles file and dbguard agree on
where the database lives afterwards, also when the move was killed half way."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from faults import without_dac

from dbguard_plugin.crashpoints import ENV as CRASH_ENV
from dbguard_plugin.location import identity_of
from dbguard_plugin.operations.profile_store import ProfileStore

#: crash point -> does the database live at the new place after recovery?
POINTS = {"move:copied": False, "move:renamed": False, "move:journaled": True,
          "move:configured": True}


@pytest.fixture
def bot(tmp_path: Path, run_cli, make_trades_db) -> dict[str, Path | str]:
    """A bot config naming the database, and an active production profile that names it
    too (through a directory symlink, as an operator's profile may), with one backup."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tradesv3.sqlite"
    make_trades_db(db, 100)
    (tmp_path / "alias").symlink_to("data", target_is_directory=True)
    config = tmp_path / "bot" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"db_url": f"sqlite:///{db}", "stake_currency": "USDT"},
                                 indent=4) + "\n", encoding="utf-8")
    cfg = ("--config", str(config))
    for args in (("profile", "create", "live", "--kind", "production", "--db-url",
                  f"sqlite:///{tmp_path}/alias/tradesv3.sqlite"),
                 ("profile", "switch", "live", "--yes")):
        done = run_cli(*args, *cfg)
        assert done.returncode == 0, done.stdout + done.stderr
    made = run_cli("backup", *cfg, "--json")
    assert made.returncode == 0, made.stderr
    target = tmp_path / "disk2"
    target.mkdir()
    return {"db": db, "config": config, "target": target, "new": target / db.name,
            "backup_id": json.loads(made.stdout)["id"]}


def _everything_names(run_cli, bot: dict[str, Path | str], where: Path) -> None:
    """status, backups and restore --preview (through the config and the profile) and the
    two files themselves all name *where*."""
    cfg = ("--config", str(bot["config"]))
    status = run_cli("status", *cfg, "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["file"] == str(where)
    assert data["warnings"] == []
    listed = run_cli("backups", *cfg, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [bot["backup_id"]]
    assert rows[0]["path"].startswith(f"{where}.dbguard/")
    preview = run_cli("restore", str(bot["backup_id"]), "--preview", *cfg)
    assert preview.returncode == 0, preview.stderr
    header = preview.stdout.splitlines()[0]
    assert identity_of(header.split(" into ", 1)[1].rstrip(":")) == str(where), header
    assert json.loads(Path(bot["config"]).read_text())["db_url"] == f"sqlite:///{where}" or (
        where == bot["db"])
    profile = ProfileStore.locate(bot["config"]).get("live")
    assert profile.db_url is not None
    assert Path(profile.db_url.removeprefix("sqlite:///")).resolve() == where


def test_move_updates_the_config_and_every_profile_that_names_the_database(
    run_cli, bot: dict[str, Path | str],
) -> None:
    moved = run_cli("move", str(bot["target"]), "--yes", "--config", str(bot["config"]),
                    "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    outcome = json.loads(moved.stdout)
    assert outcome["config_updated"] is True
    assert outcome["backups_moved"] is True
    assert any("profiles live" in note for note in outcome["notes"])
    _everything_names(run_cli, bot, Path(bot["new"]))


def test_move_with_delete_old_leaves_nothing_naming_the_deleted_file(
    run_cli, bot: dict[str, Path | str],
) -> None:
    moved = run_cli("move", str(bot["target"]), "--yes", "--delete-old",
                    "--config", str(bot["config"]))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert not Path(bot["db"]).exists()
    _everything_names(run_cli, bot, Path(bot["new"]))


@pytest.mark.parametrize("point", list(POINTS))
def test_a_killed_move_is_finished_or_undone_in_the_profiles_too(
    point: str, run_cli, child_env, bot: dict[str, Path | str],
) -> None:
    crashed = run_cli("move", str(bot["target"]), "--yes", "--config", str(bot["config"]),
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    recovered = run_cli("status", "--config", str(bot["config"]))
    assert recovered.returncode == 0, recovered.stderr
    verb = "finished" if POINTS[point] else "undid"
    assert f"recovered: {verb} the interrupted move" in recovered.stderr
    _everything_names(run_cli, bot, Path(bot["new"] if POINTS[point] else bot["db"]))


def test_a_status_on_a_profile_naming_a_missing_database_with_backups_warns(
    run_cli, bot: dict[str, Path | str],
) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{bot['db']}{suffix}").unlink(missing_ok=True)
    status = run_cli("status", "--config", str(bot["config"]))
    assert status.returncode == 0, status.stderr
    assert f"{bot['db']} does not exist" in status.stdout


def test_a_move_that_could_not_repoint_a_profile_is_refused_before_copying(
    run_cli, bot: dict[str, Path | str],
) -> None:
    profiles = ProfileStore.locate(bot["config"]).path
    profiles.chmod(0o400)
    config_before = Path(bot["config"]).read_text()
    refused = run_cli("move", str(bot["target"]), "--yes", "--config", str(bot["config"]),
                      wrap=without_dac, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{profiles} names the database but cannot be rewritten" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert not Path(bot["new"]).exists()
    assert list(Path(bot["target"]).iterdir()) == []
    assert Path(bot["config"]).read_text() == config_before
    assert ProfileStore.locate(bot["config"]).get("live").db_url == (
        f"sqlite:///{Path(bot['db']).parent.parent}/alias/tradesv3.sqlite")
