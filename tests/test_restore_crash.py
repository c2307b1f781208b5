"""A restore, rollback or move killed by SIGKILL at any step leaves the database exactly old
or exactly new, and the next ``dbguard`` command finishes or undoes what it left.

``DBGUARD_CRASH_AT=<point>`` makes the real ``python -m dbguard_plugin`` process kill
itself with SIGKILL at that step. Before each crash the live database holds the "old"
content and a backup holds the "new" content (several MiB, so the copy into the live
database takes several steps of the backup API). After the crash the next real command
(``dbguard status`` / ``dbguard backups``) recovers; then the database must open, pass
``integrity_check`` and hold exactly one of the two contents, and nothing of dbguard's
(journal, ``.tmp-`` file, data file without a manifest) may be left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines.sqlite.verify import verify_backup
from dbguard_plugin.location import locate
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


# -- helpers ---------------------------------------------------------------------------


def content_digest(path: Path) -> str:
    """sha256 over every table's rows, tables in name order, rows in rowid order."""
    assert path.is_file(), f"{path} does not exist"
    conn = sqlite3.connect(path)
    try:
        digest = hashlib.sha256()
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        for table in tables:
            digest.update(f"\x00table {table}\x00".encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


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


def page_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
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


# -- restore ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(RESTORE_POINTS))
def test_restore_killed_at_any_point_leaves_old_or_new(
    point, tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    expected, said, journal_left = RESTORE_POINTS[point]
    if point == "backup:compressed":
        config_file = tmp_path / "bot.json"
        config_file.write_text(json.dumps({"db_url": db_url,
                                           "dbguard": {"compression": "gzip"}}))
        where = ["--config", str(config_file)]
        config = Config.load(config_file)
    else:
        where = ["--db", db_url]
        config = Config(db_url=db_url)
    make_new_database(db_path)
    assert page_count(db_path) > 2 * STEP_PAGES  # the copy takes several steps
    backup = make_guard(config).backup()
    new = content_digest(db_path)  # what the backup holds
    catalog = state_dir / "backups"
    if point == "restore:rolling-back":
        # The backup verifies (its file is intact) but its manifest's row counts are
        # wrong, so the check after the copy fails and the safety backup goes back.
        manifest_path = catalog / f"{backup.id}.json"
        data = json.loads(manifest_path.read_text())
        data["tables"]["t"] += 1
        manifest_path.write_text(json.dumps(data))
    make_old(db_path)
    old = content_digest(db_path)
    assert old != new

    crashed = run_cli("restore", backup.id, *where, "--yes",
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert (state_dir / JOURNAL).exists() is journal_left
    if point == "restore:copying":  # uncommitted frames of the killed copy are in the WAL
        assert Path(f"{db_path}-wal").stat().st_size > 2 << 20

    recovered = run_cli("status", *where)
    assert recovered.returncode == 0, recovered.stderr
    if said is None:
        assert "recovered:" not in recovered.stderr
    else:
        assert f"dbguard: recovered: {said}" in recovered.stderr, recovered.stderr
    if said in ("undid", "finished"):
        assert backup.id in recovered.stderr

    assert integrity(db_path) == ["ok"]
    now = content_digest(db_path)
    assert now in (old, new), f"{point}: the database holds neither content"
    outcome = "old" if now == old else "new"
    assert outcome == expected, f"{point}: the database holds the {outcome} content"

    assert leftovers(state_dir) == [], f"{point}: left {leftovers(state_dir)}"
    ids = assert_catalog_sound(catalog, db_path)
    assert backup.id in ids
    last = state_dir / "last-replacement.json"
    if outcome == "new":
        recorded = json.loads(last.read_text())
        assert recorded["backup_id"] == backup.id
        assert recorded["safety_id"] in ids  # the rollback it promises is possible...
        safety = catalog / f"{recorded['safety_id']}.sqlite"
        assert content_digest(safety) == old  # ...and puts back exactly the old content
    else:
        assert not last.exists()


def test_restore_killed_mid_copy_of_a_rollback_journal_database(
    db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    """The same in rollback-journal mode: the killed copy leaves a hot journal, which the
    recovering command must roll back, not trip over."""
    make_new_database(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    backup = make_guard(Config(db_url=db_url)).backup()
    new = content_digest(db_path)
    make_old(db_path)
    old = content_digest(db_path)

    crashed = run_cli("restore", backup.id, "--db", db_url, "--yes",
                      env=child_env(**{CRASH_ENV: "restore:copying"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert Path(f"{db_path}-journal").exists()  # a hot journal: the copy had not committed

    recovered = run_cli("status", "--db", db_url)
    assert recovered.returncode == 0, recovered.stderr
    assert "dbguard: recovered: undid" in recovered.stderr
    assert integrity(db_path) == ["ok"]
    assert content_digest(db_path) == old != new
    assert leftovers(state_dir) == []


def test_gzip_restore_killed_leaves_no_decompressed_scratch_copy(
    tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    """A gzip backup is decompressed to a ``.tmp-read-<pid>-`` scratch copy (as big as the
    database) for the restore; once that pid is dead, the next command removes it."""
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"db_url": db_url, "dbguard": {"compression": "gzip"}}))
    make_new_database(db_path, bulk_rows=1500)
    backup = make_guard(Config.load(config_file)).backup()
    make_old(db_path)
    old = content_digest(db_path)

    crashed = run_cli("restore", backup.id, "--config", str(config_file), "--yes",
                      env=child_env(**{CRASH_ENV: "restore:copying"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    catalog = state_dir / "backups"
    assert any(n.startswith(".tmp-read-") for n in os.listdir(catalog))

    recovered = run_cli("status", "--config", str(config_file))
    assert recovered.returncode == 0, recovered.stderr
    assert "dbguard: recovered: undid" in recovered.stderr
    assert content_digest(db_path) == old
    assert leftovers(catalog) == [], "the killed restore's scratch copy is still there"


# -- move -------------------------------------------------------------------------------


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


@pytest.mark.parametrize("point", list(MOVE_POINTS))
def test_move_killed_at_any_point_leaves_one_database_in_use(
    point, tmp_path, db_path, db_url, state_dir, make_guard, run_cli, child_env
):
    expected, said, delete_old = MOVE_POINTS[point]
    config_file, text, target, new_url, digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    assert page_count(db_path) > STEP_PAGES
    new_path = target / db_path.name
    new_state = new_path.with_name(new_path.name + ".dbguard")
    (backup_id,) = [n[:-5] for n in os.listdir(state_dir / "backups") if n.endswith(".json")
                    and not n.startswith(".")]

    args = ["move", str(target), "--config", str(config_file), "--yes"]
    crashed = run_cli(*args, *(["--delete-old"] if delete_old else []),
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    listed = run_cli("backups", "--config", str(config_file), "--json")
    assert listed.returncode == 0, listed.stderr
    if said is None:
        assert "recovered:" not in listed.stderr
    else:
        assert f"dbguard: recovered: {said}" in listed.stderr, listed.stderr
    # The backups went with the database (or stayed with it) and are listed either way.
    assert [row["id"] for row in json.loads(listed.stdout)] == [backup_id]

    after = config_file.read_text()
    named = json.loads(after)["db_url"]
    assert named in (db_url, new_url)
    outcome = "old" if named == db_url else "new"
    assert outcome == expected, f"{point}: the config names the {outcome} path"
    # Only the URL changed in the config file, byte for byte.
    assert after == (text if outcome == "old" else text.replace(db_url, new_url))
    live = db_path if outcome == "old" else new_path
    assert integrity(live) == ["ok"]
    assert content_digest(live) == digest
    if outcome == "new":
        assert db_path.exists() is not delete_old
        catalog = new_state / "backups"
        assert not (state_dir / "backups").exists()
    else:
        catalog = state_dir / "backups"

    for directory in (state_dir, new_state, target):
        assert leftovers(directory) == [], f"{point}: {directory}: {leftovers(directory)}"
    assert assert_catalog_sound(catalog, live) == [backup_id]
    # The catalog's marker names the database it now belongs to.
    marker = json.loads((catalog / ".dbguard-catalog.json").read_text())
    assert marker["database"] == str(live)
    # ... and remembers where it lived, so backups from before the move still restore.
    assert marker.get("formerly", []) == ([] if live == db_path else [str(db_path)])


def test_move_killed_after_the_rename_leaves_no_stray_file_at_the_new_place(
    tmp_path, db_path, db_url, make_guard, run_cli, child_env
):
    """Killed between renaming the copy into place and journaling the switch: recovery
    undoes the move, so the copy at the new place must go too, and the same move can be
    made again."""
    config_file, _text, target, new_url, digest = make_move_setup(
        tmp_path, db_path, db_url, make_guard)
    args = ["move", str(target), "--config", str(config_file), "--yes"]
    crashed = run_cli(*args, env=child_env(**{CRASH_ENV: "move:renamed"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    recovered = run_cli("status", "--config", str(config_file))
    assert "recovered: undid the interrupted move" in recovered.stderr
    assert json.loads(config_file.read_text())["db_url"] == db_url
    assert sorted(os.listdir(target)) == [], "an undone move left a database at the new place"

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(config_file.read_text())["db_url"] == new_url
    assert content_digest(target / db_path.name) == digest
