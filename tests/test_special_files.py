"""A FIFO, a device or an outsized file where dbguard reads a small file of its own or
the operator's: a clear answer (exit 2 naming it, or a damaged row), never a command
that hangs on a FIFO without a writer or reads ``/dev/zero`` until memory runs out.

Every case runs the real ``dbguard`` as a process with a deadline: a hang fails it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_runs import Cli
from sqlite_files import make_db

from dbguard_plugin.files import SMALL_FILE

#: Long enough for a slow machine, far shorter than a hang.
DEADLINE = 60


@pytest.mark.parametrize("kind", ["fifo", "device", "outsized"])
def test_a_config_that_is_not_a_small_regular_file_is_exit_2(kind, tmp_path, run_cli: Cli):
    config = {"fifo": tmp_path / "bot.json", "device": Path("/dev/zero"),
              "outsized": tmp_path / "big.json"}[kind]
    if kind == "fifo":
        os.mkfifo(config)
    elif kind == "outsized":
        config.write_bytes(b" " * (SMALL_FILE + 1))
    result = run_cli("status", "--config", str(config), timeout=DEADLINE)
    assert result.returncode == 2, result.stdout + result.stderr
    said = "larger than 16 MiB" if kind == "outsized" else "is not a regular file"
    assert f"dbguard: {config}: {said}" in result.stderr
    assert "check --config" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_null_device_is_still_an_empty_config(run_cli: Cli) -> None:
    result = run_cli("status", "--config", os.devnull, timeout=DEADLINE)
    assert result.returncode == 2
    assert f"{os.devnull}: no database" in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "null"])
def test_a_profiles_file_that_is_not_a_regular_file_is_exit_2(kind, tmp_path, db_url,
                                                              child_env, run_cli: Cli):
    path = tmp_path / "profiles.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path(os.devnull)  # dbguard writes this file back: never the null device
    result = run_cli("profile", "list", "--db", db_url, timeout=DEADLINE,
                     env=child_env(DBGUARD_PROFILES=str(path)))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: is not a regular file" in result.stderr
    assert "not a profiles file" in result.stderr


def test_a_fifo_named_like_a_manifest_is_a_damaged_row(db_path, db_url, run_cli: Cli):
    make_db(db_path)
    made = run_cli("backup", "--json", "--db", db_url, timeout=DEADLINE)
    assert made.returncode == 0, made.stderr
    good = json.loads(made.stdout)["id"]
    catalog = db_path.with_name(db_path.name + ".dbguard") / "backups"
    fifo = catalog / "20990101T000000000Z-manual.json"
    os.mkfifo(fifo)
    listed = run_cli("backups", "--json", "--db", db_url, timeout=DEADLINE)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows if "damaged" not in row] == [good]
    (damaged,) = [row for row in rows if "damaged" in row]
    assert "is not a regular file" in damaged["damaged"]
    assert run_cli("prune", "--db", db_url, timeout=DEADLINE).returncode == 0
    assert fifo.exists()  # never deleted, as no damaged manifest is


@pytest.mark.parametrize("where", ["holders/writer-elsewhere-1.json", "operation.json",
                                   "last-replacement.json"])
def test_a_fifo_in_the_state_directory_hangs_no_command(where, db_path, db_url,
                                                        run_cli: Cli) -> None:
    make_db(db_path)
    assert run_cli("backup", "--db", db_url, timeout=DEADLINE).returncode == 0
    fifo = db_path.with_name(db_path.name + ".dbguard") / where
    fifo.parent.mkdir(mode=0o700, exist_ok=True)
    os.mkfifo(fifo)
    for args in (("status", "--json"), ("check", "restore")):
        result = run_cli(*args, "--db", db_url, timeout=DEADLINE)
        assert result.returncode in (0, 1, 3), result.stdout + result.stderr
        assert "Traceback" not in result.stderr
