"""SIGKILL at every crash point of every operation; the next command recovers.

The points are read from the package's source (every ``reach("...")``), so a point added
later and not driven here fails :func:`test_the_matrix_covers_every_crash_point`. Each
case runs the real ``python -m dbguard_plugin`` command with ``DBGUARD_CRASH_AT=<point>``,
then one more real command, and checks: ``integrity_check`` ok, the content exactly the
old or the new state, no ``.tmp-`` file, journal or data file without a manifest left, and
every backup in the catalog verifies. The per-point expectations (which of old or new) are
pinned by tests/test_*_crash.py; this matrix adds the cases those leave out (rollback, and
one table over every operation).
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_cases import (
    BACKUP,
    BULK,
    CRASH_ENV,
    MOVE,
    PRUNE,
    RESTORE,
    SWITCH,
    leftovers,
    make_move_setup,
    make_new_database,
    make_old,
    orphan_data,
)
from harness import REPOSITORY_ONLY, Tally, check_database
from sqlite_files import content_digest

import dbguard_plugin
from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.location import locate
from dbguard_plugin.operations.profile_store import ProfileStore
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config
from dbguard_plugin.settings.profile_file import BESIDE_CONFIG

PACKAGE = Path(dbguard_plugin.__file__).parent

#: Only PostgreSQL/MariaDB backups reach these: they need a server, not this suite.
SERVER_ONLY = re.compile(r"^server-")


CASES = (
    [("backup", p) for p in BACKUP]
    + [("restore", p) for p in BACKUP + RESTORE]
    + [("rollback", p) for p in BACKUP + RESTORE]
    + [("move", p) for p in MOVE]
    + [("switch", p) for p in SWITCH]
    + [("prune", p) for p in PRUNE]
)


def _points_in_code() -> set[str]:
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        found.update(re.findall(r'\breach\("([^"]+)"\)', source.read_text(encoding="utf-8")))
    return found


def test_the_matrix_covers_every_crash_point() -> None:
    in_code = {p for p in _points_in_code()
               if not SERVER_ONLY.match(p) and not REPOSITORY_ONLY.match(p)}
    assert len(in_code) >= 30, in_code  # the scan really found the points
    assert in_code - {p for _, p in CASES} == set(), "crash points the matrix never drives"
    assert {p for _, p in CASES} - in_code == set(), "the matrix names points the code lacks"


def _gzip_config(tmp_path: Path, db_url: str) -> Path:
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"db_url": db_url, "dbguard": {"compression": "gzip"}}))
    return config


def _assert_catalog_sound(catalog: Path, database: Path) -> None:
    assert leftovers(catalog) == [], f"left in {catalog}: {leftovers(catalog)}"
    assert orphan_data(catalog) == [], f"data files without a manifest: {orphan_data(catalog)}"
    cat = Catalog(catalog, locate(f"sqlite:///{database}"))
    for manifest in cat.manifests():
        result = verify_backup(cat, manifest, "quick_check")
        assert result.ok, result.problems


def _old_or_new(tally: Tally, path: Path, old: str, new: str, case: str) -> str:
    check_database(tally, path)
    now = content_digest(path)
    if now not in (old, new):
        tally.corrupt += 1
    assert now in (old, new), f"{case}: the database holds neither the old nor the new state"
    return "old" if now == old else "new"


@pytest.mark.parametrize(("operation", "point"), CASES, ids=[f"{o}-{p}" for o, p in CASES])
def test_sigkill_then_recovery(
    operation: str, point: str, tmp_path: Path, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., object], run_cli: Callable[..., object],
    child_env: Callable[..., dict[str, str]], tally: Tally,
) -> None:
    case = f"{operation} killed at {point}"
    killed_env = child_env(**{CRASH_ENV: point})
    catalog = state_dir / "backups"
    gzip = point == "backup:compressed"
    config = Config.load(_gzip_config(tmp_path, db_url)) if gzip else Config(db_url=db_url)
    where = ["--config", str(tmp_path / "bot.json")] if gzip else ["--db", db_url]

    if operation in ("backup", "prune"):
        make_new_database(db_path, bulk_rows=BULK // 4)
        guard = make_guard(Config(db_url=db_url, keep_last=10) if not gzip else config)
        made = [guard.backup() for _ in range(3 if operation == "prune" else 1)]
        before = content_digest(db_path)
        if operation == "prune":
            (tmp_path / "bot.json").write_text(json.dumps({"dbguard": {
                "db_url": db_url, "keep_last": 1, "keep_daily": 0, "keep_weekly": 0}}))
            where = ["--config", str(tmp_path / "bot.json")]
        crashed = run_cli(operation, *where, env=killed_env)
        assert crashed.returncode == -signal.SIGKILL, case + crashed.stderr
        again = run_cli(operation, *where)
        assert again.returncode == 0, again.stderr
        # A backup or a prune never writes the database: it is exactly as it was.
        assert _old_or_new(tally, db_path, before, before, case) == "old"
        _assert_catalog_sound(catalog, db_path)
        ids = {m.id for m in Catalog(catalog).manifests()}
        if operation == "prune":
            assert ids == {made[-1].id}
        else:
            assert made[0].id in ids

    elif operation in ("restore", "rollback"):
        make_new_database(db_path, bulk_rows=BULK)
        guard = make_guard(config)
        backup = guard.backup()
        new = content_digest(db_path)
        make_old(db_path)
        old = content_digest(db_path)
        if operation == "rollback":
            restore(guard, backup.id)  # live: new; its safety backup: old
            before, after = new, old
            target = json.loads((state_dir / "last-replacement.json").read_text())["safety_id"]
            args = ["rollback", *where, "--yes"]
        else:
            before, after = old, new
            target = backup.id
            args = ["restore", backup.id, *where, "--yes"]
        if point == "restore:rolling-back":
            # The target verifies but its manifest's row counts are wrong: the check after
            # the copy fails and the safety backup is being written back when it dies.
            manifest_path = catalog / f"{target}.json"
            data = json.loads(manifest_path.read_text())
            data["tables"]["t"] += 1
            manifest_path.write_text(json.dumps(data))
        crashed = run_cli(*args, env=killed_env)
        assert crashed.returncode == -signal.SIGKILL, case + crashed.stdout + crashed.stderr
        recovered = run_cli("status", *where)
        assert recovered.returncode == 0, recovered.stderr
        _old_or_new(tally, db_path, before, after, case)
        assert leftovers(state_dir) == [], f"{case}: left {leftovers(state_dir)}"
        _assert_catalog_sound(catalog, db_path)

    elif operation == "move":
        config_file, _text, target_dir, new_url, digest = make_move_setup(
            tmp_path, db_path, db_url, make_guard)
        new_path = target_dir / db_path.name
        extra = ["--delete-old"] if point == "move:old-deleted" else []
        crashed = run_cli("move", str(target_dir), "--config", str(config_file), "--yes",
                          *extra, env=killed_env)
        assert crashed.returncode == -signal.SIGKILL, case + crashed.stderr
        listed = run_cli("backups", "--config", str(config_file), "--json")
        assert listed.returncode == 0, listed.stderr
        named = json.loads(config_file.read_text())["db_url"]
        assert named in (db_url, new_url), f"{case}: the config names {named}"
        live = db_path if named == db_url else new_path
        # A move changes where the database is, never what it holds.
        assert _old_or_new(tally, live, digest, digest, case) == "old"
        new_state = new_path.with_name(new_path.name + ".dbguard")
        for directory in (state_dir, new_state, target_dir):
            assert leftovers(directory) == [], f"{case}: {directory}: {leftovers(directory)}"
        if live == new_path:
            assert sorted(p.name for p in target_dir.iterdir()) == sorted(
                [new_path.name, new_state.name, *(
                    n for n in (f"{new_path.name}-wal", f"{new_path.name}-shm")
                    if (target_dir / n).exists())])
        _assert_catalog_sound(live.with_name(live.name + ".dbguard") / "backups", live)

    else:  # switch
        dry = tmp_path / "tradesv3.dryrun.sqlite"
        make_new_database(db_path, bulk_rows=BULK // 4)
        make_new_database(dry, bulk_rows=10)
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps({"db_url": db_url}), encoding="utf-8")
        store = ProfileStore.locate(config_file)
        store.update("testing", db_url=f"sqlite:///{dry}")
        store.switch("production")
        digests = (content_digest(db_path), content_digest(dry))
        cfg = ["--config", str(config_file)]
        crashed = run_cli("profile", "switch", "testing", "--yes", *cfg, env=killed_env)
        assert crashed.returncode == -signal.SIGKILL, case + crashed.stderr
        listed = run_cli("profile", "list", *cfg, "--json")
        assert listed.returncode == 0, listed.stderr
        data = json.loads(listed.stdout)
        assert data["active"] in ("production", "testing")
        assert [p["name"] for p in data["profiles"] if p["active"]] == [data["active"]]
        assert _old_or_new(tally, db_path, digests[0], digests[0], case) == "old"
        assert _old_or_new(tally, dry, digests[1], digests[1], case) == "old"
        assert [p.name for p in tmp_path.iterdir()
                if p.name.startswith(f".tmp-{BESIDE_CONFIG}")] == []
        again = run_cli("profile", "switch", "testing", "--yes", *cfg)
        assert again.returncode == 0, again.stderr
        assert leftovers(state_dir) == []
        _assert_catalog_sound(catalog, db_path)

    tally.crash_points.add(f"{operation}/{point}")


def test_a_killed_writer_never_corrupts_what_dbguard_restores(
    db_path: Path, db_url: str, make_guard: Callable[..., object], spawn, tally: Tally
) -> None:
    """The bot itself is killed mid-transaction; the backup taken after it, and a restore
    of it, hold exactly its committed rows."""
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, 'kept')", [(i,) for i in range(1, 101)])
    conn.commit()
    conn.close()
    committed = content_digest(db_path)
    bot = spawn("""
        import sqlite3, sys
        conn = sqlite3.connect(sys.argv[1])
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (v) VALUES ('never committed')", [()] * 5000)
        print("READY", flush=True)
        sys.stdin.readline()
    """, str(db_path))
    bot.kill()
    guard = make_guard()
    manifest = guard.backup()
    restore(guard, manifest.id)
    check_database(tally, db_path)
    assert content_digest(db_path) == committed
    tally.crash_points.add("bot/mid-transaction")
