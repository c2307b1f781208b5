"""A backup or a prune killed by SIGKILL at any step leaves only complete backups.

``DBGUARD_CRASH_AT=<point>`` makes the real ``python -m dbguard_plugin`` process kill
itself with SIGKILL when it reaches that point. After the crash the catalog lists only
complete backups, each of which verifies, and the next real ``dbguard`` run removes what
the killed one left behind. (The listing and verification in between are read-only and
run in this process through CliRunner, to keep the suite fast.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from dbguard_plugin.settings.config import Config

CRASH_ENV = "DBGUARD_CRASH_AT"

#: Crash point -> what the killed backup leaves in the catalog, before anyone cleans up.
BACKUP_POINTS = {
    "backup:locked": "nothing",
    "backup:copying": "tmp copy",
    "backup:copied": "tmp copy",
    "backup:checked": "tmp copy",
    "backup:hashed": "tmp copy",
    "backup:compressed": "tmp copy and tmp archive",
    "backup:renamed": "data file without manifest",
    "backup:manifested": "complete backup",
}


def make_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT, amount REAL)")
    conn.executemany("INSERT INTO trades (pair, amount) VALUES (?, ?)",
                     [("BTC/USDT", i / 7) for i in range(rows)])
    conn.close()


def inventory(directory: Path) -> tuple[set[str], set[str], set[str]]:
    """(.tmp- files, ids with a manifest, data files) in a catalog directory."""
    names = {n for n in os.listdir(directory) if n.startswith(".tmp-") or n[0] != "."}
    tmp = {n for n in names if n.startswith(".tmp-")}
    manifests = {n[: -len(".json")] for n in names - tmp if n.endswith(".json")}
    data = {n for n in names - tmp if ".sqlite" in n}
    assert names == tmp | data | {f"{m}.json" for m in manifests}, names
    return tmp, manifests, data


def orphans(data: set[str], manifests: set[str]) -> set[str]:
    return {name for name in data if name.split(".sqlite")[0] not in manifests}


@pytest.mark.parametrize("point", list(BACKUP_POINTS))
def test_backup_killed_at_any_point_leaves_only_complete_backups(
    point, tmp_path, db_path, db_url, make_guard, run_cli, child_env
):
    make_db(db_path, rows=3000)
    if point == "backup:compressed":
        config_file = tmp_path / "bot.json"
        config_file.write_text(json.dumps({"dbguard": {"db_url": db_url,
                                                       "compression": "gzip"}}))
        where = ["--config", str(config_file)]
        config = Config.load(config_file)
    else:
        where = ["--db", db_url]
        config = Config(db_url=db_url)
    first = make_guard(config).backup()
    catalog = db_path.with_name(db_path.name + ".dbguard") / "backups"

    crashed = run_cli("backup", *where, env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert crashed.stdout == ""

    # The process really died at that step: what it left shows how far it got.
    tmp, manifests, data = inventory(catalog)
    suffix = ".gz" if point == "backup:compressed" else ""
    left = BACKUP_POINTS[point]
    if left == "nothing":
        assert (tmp, manifests, data) == (set(), {first.id}, {first.file})
    elif left.startswith("tmp copy"):
        assert manifests == {first.id}
        assert data == {first.file}
        (copy,) = (n for n in tmp if n.endswith(".sqlite"))
        expected = {copy, copy + ".gz"} if left.endswith("archive") else {copy}
        assert tmp == expected
    elif left == "data file without manifest":
        assert (tmp, manifests) == (set(), {first.id})
        (orphan,) = orphans(data, manifests)
        assert orphan.endswith(".sqlite" + suffix)
    else:
        assert tmp == set()
        assert len(manifests) == 2
        assert orphans(data, manifests) == set()

    listed = run_cli("backups", "--json", *where, in_process=True)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    ids = [row["id"] for row in rows]
    if point == "backup:manifested":
        assert ids[0] == first.id
        assert len(ids) == 2
        assert rows[1]["reason"] == "manual"
        assert rows[1]["verified"] is True
    else:
        assert ids == [first.id]

    verified = run_cli("verify", "--all", *where, in_process=True)
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines()[-1] == f"{len(ids)} ok, 0 bad"

    again = run_cli("backup", *where)
    assert again.returncode == 0, again.stderr
    tmp, manifests, data = inventory(catalog)
    assert tmp == set(), f"left behind: {tmp}"
    assert orphans(data, manifests) == set()
    assert len(data) == len(manifests) == len(ids) + 1


def test_prune_killed_between_manifest_and_data_leaves_no_orphan(
    tmp_path, db_path, db_url, make_guard, run_cli, child_env
):
    make_db(db_path, rows=500)
    guard = make_guard(Config(db_url=db_url, keep_last=10))
    made = [guard.backup() for _ in range(4)]
    catalog = guard.catalog.directory
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "keep_last": 2, "keep_daily": 0, "keep_weekly": 0,
    }}))
    where = ["--config", str(config_file)]

    crashed = run_cli("prune", *where, env=child_env(**{CRASH_ENV: "prune:manifest-deleted"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    tmp, manifests, data = inventory(catalog)
    assert manifests == {m.id for m in made[1:]}  # the oldest lost its manifest first...
    assert orphans(data, manifests) == {made[0].file}  # ...and its data file is left over

    listed = run_cli("backups", "--json", *where, in_process=True)
    assert [row["id"] for row in json.loads(listed.stdout)] == [m.id for m in made[1:]]
    verified = run_cli("verify", "--all", *where, in_process=True)
    assert verified.exit_code == 0, verified.output

    pruned = run_cli("prune", *where)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == [f"deleted {made[1].id}", "deleted 1 backups"]
    tmp, manifests, data = inventory(catalog)
    assert tmp == set()
    assert manifests == {made[2].id, made[3].id}
    assert data == {made[2].file, made[3].file}

    verified = run_cli("verify", "--all", *where, in_process=True)
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines() == [
        f"ok   {made[2].id}", f"ok   {made[3].id}", "2 ok, 0 bad"]
