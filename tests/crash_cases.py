"""Crash points and what a crash at one of them must leave: shared by the suite
(test_restore_crash.py, test_recovery_decision.py, test_damaged_journal.py) and the
torture suite (torture/test_crash_matrix.py, torture/test_crash_then_writes.py).

``DBGUARD_CRASH_AT=<point>`` makes a real ``python -m dbguard_plugin`` process kill itself
with SIGKILL at that step. A support module, not a test module: no test module imports
another. The ``crash_then_write`` and ``move_crash_then_write`` fixtures (conftest.py)
hand the two scenarios out with the test's fixtures bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_files import content_digest, integrity

from dbguard_plugin import Guard
from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.location import locate
from dbguard_plugin.operations.restore import restore
from dbguard_plugin.settings.config import Config

CRASH_ENV = "DBGUARD_CRASH_AT"


JOURNAL = "operation.json"


#: Rows of bulk data (4000 bytes each): about 10 MiB, 2,600 pages of 4 KiB, so the copy
#: into the live database (1,024 pages per step) takes three steps, and its first step
#: (4 MiB) overflows SQLite's default page cache (2 MiB): the killed copy has really
#: written uncommitted pages (WAL frames, or pages behind a hot journal).
BULK_ROWS = 2400


STEP_PAGES = 1024


# point -> (content after recovery, what the recovering command says, journal left by the
# killed process)
RESTORE_POINTS: dict[str, tuple[str, str | None, bool]] = {
    # the safety backup of the live database, before anything is journaled
    "backup:locked": ("old", None, False),
    "backup:copying": ("old", "removed what an interrupted backup left", False),
    "backup:copied": ("old", "removed what an interrupted backup left", False),
    "backup:checked": ("old", "removed what an interrupted backup left", False),
    "backup:hashed": ("old", "removed what an interrupted backup left", False),
    "backup:compressed": ("old", "removed what an interrupted backup left", False),
    "backup:renamed": ("old", "removed what an interrupted backup left", False),
    "backup:manifested": ("old", None, False),
    # the restore itself
    "restore:locked": ("old", None, False),
    "restore:verified": ("old", None, False),
    "restore:space-checked": ("old", None, False),
    "restore:safety-done": ("old", None, False),
    "restore:journal-written": ("old", "undid", True),
    "restore:copying": ("old", "undid", True),  # first of three steps: not committed
    "restore:copied": ("new", "finished", True),
    "restore:checked": ("new", "finished", True),
    "restore:recorded": ("new", "finished", True),
    "restore:done": ("new", None, False),
    # the post-check failed (the manifest's row counts were edited) and the safety
    # backup was being written back
    "restore:rolling-back": ("old", "undid", True),
}


# point -> (where the database lives after recovery, what the recovering command says,
# --delete-old)
MOVE_POINTS: dict[str, tuple[str, str | None, bool]] = {
    "move:locked": ("old", None, False),
    "move:journal-written": ("old", "undid", False),
    "move:copying": ("old", "undid", False),
    "move:copied": ("old", "undid", False),
    "move:renamed": ("old", "undid", False),
    "move:journaled": ("new", "finished", False),
    "move:configured": ("new", "finished", False),
    "move:old-deleted": ("new", "finished", True),
    "move:done": ("new", None, False),
}


def make_new_database(path: Path, bulk_rows: int = BULK_ROWS) -> None:
    """The content a backup will hold: 300 rows in t, a few MiB of bulk, WAL mode."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
    conn.executemany("INSERT INTO t (id, v) VALUES (?, ?)",
                     [(i, f"new-{i}") for i in range(1, 301)])
    conn.executemany("INSERT INTO bulk (b) VALUES (randomblob(4000))", [()] * bulk_rows)
    conn.commit()
    conn.close()


def make_old(path: Path) -> None:
    """Turn the live database into the "old" content: fewer rows, other values."""
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM t WHERE id > 200")
    conn.execute("UPDATE t SET v = 'old-' || id")
    conn.execute("DELETE FROM bulk WHERE id % 10 = 0")
    conn.commit()
    conn.close()


def leftovers(directory: Path) -> list[str]:
    """dbguard's scratch files in *directory*: .tmp- names and the operation journal."""
    if not directory.is_dir():
        return []
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-") or n == JOURNAL)


def orphan_data(catalog: Path) -> list[str]:
    """Backup data files without their manifest."""
    if not catalog.is_dir():
        return []
    names = set(os.listdir(catalog))
    return sorted(n for n in names if not n.startswith(".") and ".sqlite" in n
                  and f"{n.split('.sqlite')[0]}.json" not in names)


def assert_catalog_sound(catalog: Path, database: Path) -> list[str]:
    """No leftovers, no orphan, every backup verifies; return the ids."""
    assert leftovers(catalog) == []
    assert orphan_data(catalog) == []
    cat = Catalog(catalog, locate(f"sqlite:///{database}"))
    manifests = cat.manifests()
    for manifest in manifests:
        result = verify_backup(cat, manifest, "quick_check")
        assert result.ok, result.problems
    return [m.id for m in manifests]


def make_move_setup(tmp_path: Path, db_path: Path, db_url: str, make_guard) -> tuple[
    Path, str, Path, str, str
]:
    """A bot config naming the database (like freqtrade's), a database with a backup, and
    an empty directory to move to. Returns (config, its text, target dir, new url, digest)."""
    make_new_database(db_path)
    make_old(db_path)
    config_file = tmp_path / "config.json"
    text = json.dumps({
        "max_open_trades": 3,
        "stake_currency": "USDT",
        "db_url": db_url,
        "dbguard": {"environment": "development"},
        "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT"]},
    }, indent=4) + "\n"
    config_file.write_text(text)
    make_guard(Config.load(config_file)).backup()
    target = tmp_path / "disk2"
    target.mkdir()
    new_url = f"sqlite:///{target / db_path.name}"
    return config_file, text, target, new_url, content_digest(db_path)


# -- the crash points in the order an operation reaches them ------------------------------


BACKUP = ["backup:locked", "backup:copying", "backup:copied", "backup:checked",
          "backup:hashed", "backup:compressed", "backup:renamed", "backup:manifested"]


RESTORE = ["restore:locked", "restore:verified", "restore:space-checked",
           "restore:safety-done", "restore:journal-written", "restore:copying",
           "restore:copied", "restore:checked", "restore:recorded", "restore:done",
           "restore:rolling-back"]


MOVE = ["move:locked", "move:journal-written", "move:copying", "move:copied", "move:renamed",
        "move:journaled", "move:configured", "move:old-deleted", "move:done"]


SWITCH = ["switch:locked", "backup:copying", "backup:renamed", "switch:backed-up",
          "switch:written", "switch:done"]


PRUNE = ["prune:manifest-deleted"]


# -- a crash, then a restarted bot writes, then recovery ----------------------------------


#: about 5 MiB: the copy into the live database takes two steps of the backup API
BULK = 1200


UNDECIDED = "recovery could not decide"


#: What a bot restarted after the crash does: rows, then (mode "ddl") a migration, then
#: VACUUM, each committed. argv: database path, mode ("ddl", "rows" or "vacuum")
WRITER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=30)
    if sys.argv[2] in ("ddl", "rows"):
        conn.executemany("INSERT INTO t (v) VALUES (?)",
                         [(f"after-crash-{i}",) for i in range(1, 6)])
        conn.commit()
    if sys.argv[2] == "ddl":
        conn.execute("ALTER TABLE t ADD COLUMN note TEXT")
        conn.execute("UPDATE t SET note = 'migrated' WHERE v LIKE 'after-crash-%'")
        conn.commit()
    conn.execute("VACUUM")
    conn.close()
    print("DONE", flush=True)
"""


def logical(path: Path) -> str:
    """The test's own view of what a database holds: its schema and every row."""
    conn = sqlite3.connect(path)
    try:
        digest = hashlib.sha256()
        for row in conn.execute("SELECT type, name, sql FROM sqlite_master "
                                "WHERE name NOT LIKE 'sqlite_%' ORDER BY name"):
            digest.update(repr(row).encode())
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                     "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def written_rows(path: Path) -> list[tuple[Any, ...]]:
    """The rows the writer committed after the crash, with the migrated column if any."""
    conn = sqlite3.connect(path)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
        shown = "v, note" if "note" in columns else "v"
        return conn.execute(f"SELECT {shown} FROM t WHERE v LIKE 'after-crash-%' "
                            "ORDER BY v").fetchall()
    finally:
        conn.close()


def expected_rows(mode: str) -> list[tuple[Any, ...]]:
    if mode == "vacuum":
        return []
    if mode == "ddl":
        return [(f"after-crash-{i}", "migrated") for i in range(1, 6)]
    return [(f"after-crash-{i}",) for i in range(1, 6)]


def write_after_crash(spawn: Callable[..., Any], path: Path, mode: str) -> str:
    writer = spawn(WRITER, str(path), mode, ready="DONE")
    assert writer.wait() == 0, writer.stderr
    return logical(path)


def crash_then_write(
    operation: str, point: str, mode: str, *, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., Guard], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any],
) -> dict[str, Any]:
    """Kill *operation* (restore or rollback) at *point*, let another process write
    (*mode*), recover with ``dbguard status``; check that recovery changed nothing it
    could not account for and said the truth. Returns what the caller may go on with."""
    make_new_database(db_path, bulk_rows=BULK)
    where = ["--db", db_url]
    config = Config(db_url=db_url)
    if point == "backup:compressed":  # reached only by a compressed safety backup
        config_file = db_path.with_name("bot.json")
        config_file.write_text(json.dumps({"db_url": db_url,
                                           "dbguard": {"compression": "gzip"}}))
        where, config = ["--config", str(config_file)], Config.load(config_file)
    guard = make_guard(config)
    backup = guard.backup()
    new = logical(db_path)
    make_old(db_path)
    old = logical(db_path)
    catalog = state_dir / "backups"
    if operation == "rollback":
        restore(guard, backup.id)  # live: new; its safety backup: old
        target = json.loads((state_dir / "last-replacement.json").read_text())["safety_id"]
        args = ["rollback", *where, "--yes"]
        before, after = new, old
    else:
        target, args, before, after = backup.id, ["restore", backup.id, *where, "--yes"], \
            old, new
    if point == "restore:rolling-back":  # the post-check fails: its counts were edited
        manifest = catalog / f"{target}.json"
        data = json.loads(manifest.read_text())
        data["tables"]["t"] += 1
        manifest.write_text(json.dumps(data))
    crashed = run_cli(*args, env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    journal_left = (state_dir / JOURNAL).exists()
    assert journal_left is RESTORE_POINTS[point][2]
    at_crash = logical(db_path)
    assert at_crash in (before, after), f"{point}: SQLite left neither state"
    intent = json.loads((state_dir / JOURNAL).read_text()) if journal_left else {}

    written = write_after_crash(spawn, db_path, mode)
    recovered = run_cli("status", *where)
    assert recovered.returncode == 0, recovered.stderr
    said = recovered.stderr
    assert integrity(db_path) == ["ok"]
    assert written_rows(db_path) == expected_rows(mode), f"{point}: committed rows lost"

    if not journal_left:
        assert UNDECIDED not in said
        assert "recovered: finished" not in said
        assert "recovered: undid" not in said
        assert logical(db_path) == written, f"{point}: recovery changed the database"
    elif mode == "vacuum":  # a VACUUM changes pages, not content: recovery decides
        expected, verb = RESTORE_POINTS[point][0], RESTORE_POINTS[point][1]
        assert f"dbguard: recovered: {verb}" in said, said
        assert logical(db_path) == (before if expected == "old" else after)
        assert not (state_dir / JOURNAL).exists()
    else:
        safety = intent["safety_id"]
        assert logical(db_path) == written, f"{point}: recovery changed the database"
        assert f"dbguard: {UNDECIDED} the interrupted {operation} of backup {target}" in said
        assert (f"found: the database holds neither backup {target} (what the {operation} "
                f"writes) nor safety backup {safety}") in said, said
        assert "nothing was changed" in said
        assert "dbguard recover --keep" in said
        assert f"dbguard restore {safety} --yes" in said
        assert "recovered:" not in said
        kept = json.loads((state_dir / JOURNAL).read_text())
        assert kept["undecided"]
        assert kept["backup_id"] == target
        assert (catalog / f"{safety}.json").exists(), "the safety backup is gone"
    return {"intent": intent, "written": written, "before": before, "after": after,
            "journal_left": journal_left}


#: point -> (the place in use after recovery when the bot wrote to the place the
#: configuration named, what recovery says)
MOVE_AFTER_WRITES: dict[str, tuple[str, str | None]] = {
    point: (place, said) for point, (place, said, _delete) in MOVE_POINTS.items()}
# the switch was journaled but the configuration not yet rewritten: the bot wrote to the
# old place, so finishing would leave its rows behind
MOVE_AFTER_WRITES["move:journaled"] = ("old", "undid")


def move_crash_then_write(
    point: str, *, tmp_path: Path, db_path: Path, db_url: str,
    make_guard: Callable[..., Guard], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any],
) -> None:
    """Kill a move at *point*; the bot writes to the database its configuration names;
    recovery must leave that database in use, unchanged."""
    place, verb = MOVE_AFTER_WRITES[point]
    config_file, _text, target, _new_url, _digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    new_path = target / db_path.name
    extra = ["--delete-old"] if point == "move:old-deleted" else []
    crashed = run_cli("move", str(target), "--config", str(config_file), "--yes", *extra,
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    named = json.loads(config_file.read_text())["db_url"]
    in_use = db_path if named == db_url else new_path
    written = write_after_crash(spawn, in_use, "ddl")

    recovered = run_cli("status", "--config", str(config_file))
    assert recovered.returncode == 0, recovered.stderr
    now = json.loads(config_file.read_text())["db_url"]
    live = db_path if now == db_url else new_path
    assert ("old" if live == db_path else "new") == place, recovered.stderr
    assert live == in_use, f"{point}: the database in use moved away from the bot's rows"
    assert logical(live) == written, f"{point}: recovery changed the database in use"
    assert written_rows(live) == expected_rows("ddl")
    assert integrity(live) == ["ok"]
    if verb is None:
        assert "recovered:" not in recovered.stderr
    else:
        assert f"dbguard: recovered: {verb} the interrupted move to {new_path}" in \
            recovered.stderr
    if point == "move:journaled":  # undone, and the copy it cannot account for is kept
        assert f"the copy at {new_path} is kept" in recovered.stderr
        assert "no longer holds what the copy" in recovered.stderr
        assert new_path.exists()
    assert UNDECIDED not in recovered.stderr


def orders_wait_for_the_decision(guard: Guard, environment: str, run_cli: Any,
                                 db_url: str) -> None:
    """After a session start that found an interrupted operation awaiting a decision
    (undecided, or its journal unreadable): a production bot refuses new orders, a new
    verified backup does not change that, ``dbguard recover --keep`` does; any other
    environment admits orders throughout."""
    if environment != "production":
        assert guard.admit_order(timeout=0)
        guard.withdraw_admission()
        return
    assert guard.paused is not None
    assert "dbguard recover --keep" in guard.paused
    assert not guard.admit_order(timeout=0)
    guard.backup()  # a new verified backup is not a decision
    assert not guard.admit_order(timeout=0)
    kept = run_cli("recover", "--keep", "--db", db_url)
    assert kept.returncode == 0, kept.stderr
    assert guard.admit_order(timeout=0)
    guard.withdraw_admission()
