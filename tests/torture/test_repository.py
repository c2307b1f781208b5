"""The deduplicated repository under a live writer: many backups, pruning, collection, and
SIGKILL at every step of backup, prune, collection and convert.

The writer (harness.WRITER, a real child process) commits numbered rows throughout, so
the table always holds exactly rows 1..max: a backup that lost a row, or a restore that
brought back another backup's rows, shows as a gap or a wrong count.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_runs import Cli
from harness import (
    REPOSITORY_ONLY,
    WRITER,
    Tally,
    check_database,
    committed,
    create_numbered,
)
from harness import (
    REPOSITORY_POINTS as POINTS,
)

import dbguard_plugin
from dbguard_plugin import Guard
from dbguard_plugin.catalog.repository import Repository, read_index
from dbguard_plugin.catalog.retention import collect
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config

CRASH_ENV = "DBGUARD_CRASH_AT"


def _numbered(path: Path) -> tuple[int, int]:
    """(row count, highest n) of the writer's table."""
    with closing(sqlite3.connect(path, timeout=60)) as conn:
        count, top = conn.execute(
            "SELECT count(*), coalesce(max(n), 0) FROM numbered").fetchone()
    return int(count), int(top)


def test_fifty_backups_under_a_writer_every_tenth_pruned_each_restores_its_rows(
        db_path: Path, db_url: str, spawn: Callable[..., Any], tally: Tally) -> None:
    create_numbered(db_path)
    writer = spawn(WRITER, str(db_path))
    guard = Guard(Config(db_url=db_url, storage="repository", keep_last=1000,
                         keep_daily=0, keep_weekly=0, restore_check="quick_check"))
    try:
        made = []
        for _ in range(50):
            before = committed(db_path)
            manifest = guard.backup()  # hot: the writer commits all along
            assert manifest.tables["numbered"] >= before
            made.append(manifest)
        with guard.catalog.locked():  # every 10th goes, as prune deletes one
            for manifest in made[9::10]:
                guard.catalog.delete(manifest)
            collect(guard.catalog)
        writer.send("PAUSE")
        writer.expect("PAUSED")
        for manifest in [m for i, m in enumerate(made) if i % 10 != 9]:
            restore(guard, manifest.id, force=True)
            check_database(tally, db_path)
            count, top = _numbered(db_path)
            listed = manifest.tables["numbered"]
            tally.rows_lost += max(listed - count, 0)
            assert (count, top) == (listed, listed), manifest.id
            tally.cycles += 1
        writer.send("GO")
        writer.send("STOP")
        writer.expect("WROTE")
    finally:
        guard.close()


def _config(tmp_path: Path, db_url: str, **settings: Any) -> list[str]:
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "storage": "repository", "keep_daily": 0, "keep_weekly": 0,
        "restore_check": "quick_check", **settings}}))
    return ["--config", str(path)]


def test_every_repository_crash_point_is_driven() -> None:
    in_code: set[str] = set()
    for source in Path(dbguard_plugin.__file__).parent.rglob("*.py"):
        in_code.update(re.findall(r'\breach\("([^"]+)"\)', source.read_text("utf-8")))
    assert {p for p in in_code if REPOSITORY_ONLY.match(p)} <= set(POINTS) <= in_code


@pytest.mark.parametrize("point", list(POINTS))
def test_killed_at_any_repository_step_every_listed_backup_restores(
        point: str, tmp_path: Path, db_path: Path, db_url: str, run_cli: Cli,
        spawn: Callable[..., Any], child_env: Callable[..., dict[str, str]],
        tally: Tally) -> None:
    create_numbered(db_path)
    writer = spawn(WRITER, str(db_path))
    where = _config(tmp_path, db_url, keep_last=100)
    killed = child_env(**{CRASH_ENV: point})
    _history(db_path, run_cli, where, db_url, convert=POINTS[point] == "convert")
    if POINTS[point] == "backup":
        args = ["backup", *where]
    elif POINTS[point] == "convert":
        args = ["convert", "--yes", *where]
    else:
        if point == "gc:leftover-removed":
            left = run_cli("backup", *where,
                           env=child_env(**{CRASH_ENV: "repository:pack-written"}))
            assert left.returncode == -signal.SIGKILL
        where = _config(tmp_path, db_url, keep_last=1)
        args = ["prune", *where]
    crashed = run_cli(*args, env=killed)
    assert crashed.returncode == -signal.SIGKILL, point + crashed.stdout + crashed.stderr
    tally.crash_points.add(f"repository/{point}")
    writer.send("STOP")
    writer.expect("WROTE")

    catalog = db_path.with_name(db_path.name + ".dbguard") / "backups"
    _verified(run_cli, where, catalog)
    assert run_cli("prune", *where).returncode == 0  # collects what the crash left
    _no_garbage(catalog)
    listed = _verified(run_cli, where, catalog)
    for backup_id, rows in listed.items():
        restored = run_cli("restore", backup_id, "--yes", "--force", *where)
        assert restored.returncode == 0, f"{point}: {backup_id}: {restored.stderr}"
        check_database(tally, db_path)
        count, top = _numbered(db_path)
        tally.rows_lost += max(rows - count, 0)
        assert (count, top) == (rows, rows), f"{point}: {backup_id}"


def _history(db_path: Path, run_cli: Cli, where: list[str], db_url: str,
             convert: bool) -> None:
    """Backups to crash over: full copies for convert, else repository backups, each
    after the writer added rows; one rewrites the bulk table, so prune has whole packs
    to drop and others to rewrite."""
    for n in range(4):
        if n == 2:
            with closing(sqlite3.connect(db_path, timeout=60)) as conn, conn:
                conn.execute("UPDATE bulk SET b = randomblob(2000) WHERE id <= 140")
        made = run_cli("backup", *(["--db", db_url] if convert else where))
        assert made.returncode == 0, made.stderr


def _verified(run_cli: Cli, where: list[str], catalog: Path) -> dict[str, int]:
    """Every listed backup verifies; its id -> the writer's rows it lists."""
    result = run_cli("verify", "--all", "--json", *where)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = [r["id"] for r in json.loads(result.stdout)["results"]]
    assert ids
    return {backup_id: int(json.loads((catalog / f"{backup_id}.json").read_text())
                           ["tables"]["numbered"]) for backup_id in ids}


def _no_garbage(catalog: Path) -> None:
    """After a prune: no leftover pack, and every pack holds a chunk a backup needs."""
    repository = Repository.of(catalog)
    lists = [json.loads(p.read_text()).get("chunk_list", "")
             for p in catalog.glob("[!.]*.json")]
    referenced = repository.referenced_by(c for c in lists if c)
    packs = list(repository.packs_dir.glob("*/*"))
    assert [p.name for p in packs if p.name.startswith(".tmp-")] == []
    indexed = {p.stem for p in packs if p.suffix == ".idx"}
    assert {p.stem for p in packs if p.suffix == ".pack"} == indexed
    for idx in (p for p in packs if p.suffix == ".idx"):
        assert set(read_index(idx)) & referenced, idx.name
