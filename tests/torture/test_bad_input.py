"""A corpus of bad input: every item is refused with a message naming the problem, and the
live database stays byte-identical (sha256 of the file before and after)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Tally, change, make_db
from sqlite_files import file_sha

from dbguard_plugin import Guard
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.settings.config import Config


def _truncate(data: Path, manifest: Path) -> None:
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _flip(data: Path, manifest: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def _empty(data: Path, manifest: Path) -> None:
    data.write_bytes(b"")


def _not_sqlite(data: Path, manifest: Path) -> None:
    """A text file, its manifest's checksum and size made to match: only the magic tells."""
    import hashlib

    text = b"this is a shell history, not a database\n" * 100
    data.write_bytes(text)
    fields = json.loads(manifest.read_text())
    fields.update(size=len(text), sha256=hashlib.sha256(text).hexdigest(),
                  raw_size=len(text), raw_sha256=hashlib.sha256(text).hexdigest())
    manifest.write_text(json.dumps(fields))


def _edit(key: str, value: object) -> Callable[[Path, Path], None]:
    def edit(data: Path, manifest: Path) -> None:
        fields = json.loads(manifest.read_text())
        fields[key] = value
        manifest.write_text(json.dumps(fields))
    return edit


def _garble_manifest(data: Path, manifest: Path) -> None:
    manifest.write_text("{not json")


#: name -> (damage, exit code, what the message says)
DAMAGED = {
    "truncated backup": (_truncate, 4, "does not match the manifest's"),
    "bit-flipped backup": (_flip, 4, "does not match the manifest's"),
    "empty backup": (_empty, 4, "(size 0) does not match the manifest's"),
    "non-SQLite backup": (_not_sqlite, 4, "not a SQLite database"),
    "manifest sha256 tampered": (_edit("sha256", "0" * 64), 4,
                                 "does not match the manifest's"),
    "manifest names a file outside": (_edit("file", "../../tradesv3.sqlite"), 4,
                                      "manifest names data file '../../tradesv3.sqlite'"),
    "manifest unreadable": (_garble_manifest, 4, "manifest is unreadable"),
}


@pytest.fixture
def live(db_path: Path, db_url: str, make_guard: Callable[..., Guard]) -> Guard:
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, keep_last=50))
    return guard


@pytest.mark.parametrize("item", list(DAMAGED))
def test_a_damaged_backup_or_manifest_is_refused(
    item: str, live: Guard, db_path: Path, db_url: str, run_cli, tally: Tally
) -> None:
    manifest = live.backup()
    change(db_path)
    catalog = live.catalog.directory
    damage, code, message = DAMAGED[item]
    damage(catalog / manifest.file, catalog / f"{manifest.id}.json")
    before = file_sha(db_path)
    result = run_cli("restore", manifest.id, "--db", db_url, "--yes")
    assert result.returncode == code, result.stderr
    assert message in result.stderr, result.stderr
    assert str(catalog) in result.stderr  # the message names the file
    assert "Traceback" not in result.stderr
    assert file_sha(db_path) == before
    tally.bad_inputs.add(item)


def test_a_missing_manifest_is_refused_naming_the_catalog(
    live: Guard, db_path: Path, db_url: str, run_cli, tally: Tally
) -> None:
    manifest = live.backup()
    change(db_path)
    os.remove(live.catalog.directory / f"{manifest.id}.json")
    before = file_sha(db_path)
    result = run_cli("restore", manifest.id, "--db", db_url, "--yes")
    assert result.returncode == 1, result.stderr
    assert f"no backup '{manifest.id}' in {live.catalog.directory}" in result.stderr
    assert file_sha(db_path) == before
    tally.bad_inputs.add("missing manifest")


def test_a_backup_of_another_database_is_refused(
    tmp_path: Path, live: Guard, db_path: Path, db_url: str, run_cli, tally: Tally
) -> None:
    other_path = tmp_path / "other-bot.sqlite"
    conn = sqlite3.connect(other_path)
    conn.execute("CREATE TABLE candles (ts INTEGER, close REAL)")
    conn.commit()
    conn.close()
    other = Guard(Config(db_url=f"sqlite:///{other_path}"))
    try:
        foreign: Manifest = other.backup()
        live.catalog.prepare()  # the live database's catalog exists, as after any backup
        for name in (foreign.file, f"{foreign.id}.json"):
            shutil.copy(other.catalog.directory / name, live.catalog.directory / name)
    finally:
        other.close()
    before = file_sha(db_path)
    result = run_cli("restore", foreign.id, "--db", db_url, "--yes")
    assert file_sha(db_path) == before
    assert result.returncode != 0
    assert str(other_path) in result.stderr
    tally.bad_inputs.add("backup of another database")


@pytest.mark.parametrize("backup_id", [
    "../../etc/passwd", "/etc/passwd", "..", "a/../b", "id\nwith-newline",
    "id\x1b[31m-escape", "id\x07bell", "",
])
def test_backup_ids_with_paths_or_control_characters_are_refused(
    backup_id: str, live: Guard, db_path: Path, db_url: str, run_cli, tally: Tally
) -> None:
    live.backup()
    before = file_sha(db_path)
    result = run_cli("restore", backup_id, "--db", db_url, "--yes")
    assert result.returncode == 2, result.stderr
    assert f"{backup_id!r} is not a backup id" in result.stderr
    assert file_sha(db_path) == before
    tally.bad_inputs.add(f"backup id {backup_id!r}")


@pytest.mark.parametrize(("name", "problem"), [
    ("../evil", "it contains a path separator or '..'"),
    ("x/y", "it contains a path separator or '..'"),
    ("a\nb", "it contains a control character"),
    ("ok\x07", "it contains a control character"),
    ("esc\x1b[2J", "it contains a control character"),
])
@pytest.mark.parametrize("command", ["switch", "create"])
def test_profile_names_with_paths_or_control_characters_are_refused(
    name: str, problem: str, command: str, tmp_path: Path, live: Guard, db_path: Path,
    db_url: str, run_cli, tally: Tally,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": db_url}))
    before = file_sha(db_path)
    result = run_cli("profile", command, name, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{name!r} is not a valid profile name: {problem}" in result.stderr
    assert file_sha(db_path) == before
    assert not any(p.name.startswith("profiles") for p in tmp_path.iterdir())
    tally.bad_inputs.add(f"profile {command} {name!r}")


def test_a_symlinked_catalog_pointing_elsewhere_is_refused(
    tmp_path: Path, live: Guard, db_path: Path, db_url: str, state_dir: Path, run_cli,
    tally: Tally,
) -> None:
    manifest = live.backup()
    elsewhere = tmp_path / "elsewhere"
    shutil.move(state_dir / "backups", elsewhere)
    (state_dir / "backups").symlink_to(elsewhere, target_is_directory=True)
    change(db_path)
    before = file_sha(db_path)
    for args in (["restore", manifest.id, "--db", db_url, "--yes"], ["backup", "--db", db_url]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"{state_dir / 'backups'}" in result.stderr
        assert "symlink" in result.stderr, result.stderr
        assert file_sha(db_path) == before
    assert sorted(os.listdir(elsewhere)) == sorted(
        [manifest.file, f"{manifest.id}.json", ".dbguard-catalog.json", *(
            n for n in os.listdir(elsewhere) if n.startswith(".") and n.endswith("lock"))])
    tally.bad_inputs.add("symlinked catalog")


@pytest.mark.parametrize(("section", "message"), [
    ({"keep_last": "ten"}, "dbguard.keep_last = 'ten' is invalid: expected a whole number"),
    ({"compression": 5}, "dbguard.compression = 5 is invalid: expected one of none"),
    ({"enabled": "yes"}, "dbguard.enabled = 'yes' is invalid: expected true or false"),
    ({"busy_timeout": "slow"}, "dbguard.busy_timeout = 'slow' is invalid: expected a number"),
    ({"environment": 7}, "dbguard.environment = 7 is invalid: expected one of development"),
    ([], "'dbguard' must be an object/table of settings, not list"),
])
@pytest.mark.parametrize("command", [["backup"], ["restore", "20200101T000000000Z-manual",
                                                  "--yes"]])
def test_configuration_with_wrong_types_is_refused(
    section: object, message: str, command: list[str], tmp_path: Path, live: Guard,
    db_path: Path, db_url: str, run_cli, tally: Tally,
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": db_url, "dbguard": section}))
    before = file_sha(db_path)
    result = run_cli(*command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{config}: {message}" in result.stderr, result.stderr
    assert file_sha(db_path) == before
    tally.bad_inputs.add(f"config {json.dumps(section)}")
