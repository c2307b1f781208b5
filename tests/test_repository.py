"""The deduplicated repository (``storage = "repository"``): each backup writes only the
chunks the repository lacks, every backup restores on its own, a damaged chunk names
every backup that needs it, and prune collects what no manifest references, also when
killed at any step.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_runs import Cli

from dbguard_plugin.catalog.repository import Repository, read_index
from dbguard_plugin.cli.options import size
from dbguard_plugin.errors import VerificationError

CRASH_ENV = "DBGUARD_CRASH_AT"


def make_bot_db(path: Path, rows: int) -> None:
    """A bot's database in WAL mode: trades and orders, with a pad so it spans pages."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT, "
                     "is_open INTEGER, pad TEXT)")
        conn.execute("CREATE INDEX trades_pair ON trades (pair)")
        conn.executemany("INSERT INTO trades (pair, is_open, pad) VALUES (?, 0, ?)",
                         [(f"P{i % 40}/USDT", "x" * 300) for i in range(rows)])


def add_trades(path: Path, count: int) -> int:
    """A trading session's worth of new trades; the row count afterwards."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executemany("INSERT INTO trades (pair, is_open, pad) VALUES (?, 0, ?)",
                         [(f"P{i % 40}/USDT", "y" * 300) for i in range(count)])
        return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])


def count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM trades").fetchone()[0])


@pytest.fixture
def repo_config(tmp_path: Path, db_url: str) -> list[str]:
    """The CLI options of a bot whose dbguard keeps backups in the repository."""
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"dbguard": {"db_url": db_url, "storage": "repository",
                                            "keep_last": 100, "keep_daily": 0,
                                            "keep_weekly": 0}}))
    return ["--config", str(path)]


def backup(run_cli: Cli, where: list[str], **env: str) -> dict[str, Any]:
    result = run_cli("backup", "--json", *where, env=env or None)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def catalog_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".dbguard") / "backups"


def test_a_second_backup_writes_only_the_chunks_that_changed(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    make_bot_db(db_path, rows=6000)
    first = backup(run_cli, repo_config)
    assert first["storage"] == "repository"
    assert first["file"] == ""
    assert first["added"] == first["size"] > 0.9 * db_path.stat().st_size
    add_trades(db_path, 30)
    second = backup(run_cli, repo_config)
    assert 0 < second["added"] < 0.1 * second["size"]
    repository = Repository.of(catalog_of(db_path))
    firsts = repository.chunks_of(first["chunk_list"])
    shared = set(firsts) & set(repository.chunks_of(second["chunk_list"]))
    assert len(shared) >= 0.75 * len(firsts)
    # the repository holds each chunk once: both backups for little more than one
    assert repository.stored_bytes() < 1.3 * second["size"]


def test_every_backup_restores_its_own_rows_after_prune_collects(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    make_bot_db(db_path, rows=2000)
    oldest = backup(run_cli, repo_config)["id"]
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("UPDATE trades SET pad = ?", ("z" * 300,))  # every page rewritten
    made = []
    for _ in range(4):
        rows = add_trades(db_path, 200)
        made.append((backup(run_cli, repo_config)["id"], rows))
    _keep_last(repo_config, 3)
    before = Repository.of(catalog_of(db_path)).stored_bytes()
    pruned = run_cli("prune", *repo_config)
    assert pruned.returncode == 0, pruned.stderr
    after = Repository.of(catalog_of(db_path)).stored_bytes()
    # the oldest backup's pages are referenced by no backup left: its pack is gone
    assert after < before - 0.5 * db_path.stat().st_size
    for backup_id, rows in made[-3:]:
        restored = run_cli("restore", backup_id, "--yes", *repo_config)
        assert restored.returncode == 0, restored.stderr
        assert count(db_path) == rows
    for gone in (oldest, made[0][0]):
        assert run_cli("restore", gone, "--yes", *repo_config).returncode != 0


def _keep_last(where: list[str], last: int) -> None:
    config = json.loads(Path(where[1]).read_text())
    config["dbguard"]["keep_last"] = last
    Path(where[1]).write_text(json.dumps(config))


def test_a_damaged_chunk_names_every_backup_that_needs_it_and_only_those(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    make_bot_db(db_path, rows=3000)
    first = backup(run_cli, repo_config)
    add_trades(db_path, 100)
    second = backup(run_cli, repo_config)
    repository = Repository.of(catalog_of(db_path))
    firsts = set(repository.chunks_of(first["chunk_list"]))
    seconds = set(repository.chunks_of(second["chunk_list"]))
    only_second, shared = sorted(seconds - firsts), sorted(firsts & seconds)
    assert only_second
    assert shared
    # a flipped byte in a chunk only the second backup has
    _flip(repository, only_second[0])
    verified = run_cli("verify", "--all", "--json", *repo_config)
    assert verified.returncode == 4, verified.stdout + verified.stderr
    bad = {r["id"] for r in json.loads(verified.stdout)["results"] if not r["ok"]}
    assert bad == {second["id"]}
    assert run_cli("restore", second["id"], "--yes", *repo_config).returncode == 4
    assert run_cli("restore", first["id"], "--yes", *repo_config).returncode == 0
    # then one both share: every backup that references it is named (the restore
    # just made took a safety backup of the database, which has it too)
    _flip(repository, shared[0])
    verified = run_cli("verify", "--all", "--json", *repo_config)
    assert verified.returncode == 4
    named = {r["id"] for r in json.loads(verified.stdout)["results"] if not r["ok"]}
    catalog = catalog_of(db_path)
    assert named == {path.stem for path in catalog.glob("[!.]*.json")
                     if shared[0] in _chunks_of(catalog, path.stem)}
    assert {first["id"], second["id"]} <= named


def test_verify_all_hashes_a_shared_chunk_once(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    """verify --all reads each backup's chunks but rehashes each stored chunk once; a
    damaged shared chunk still fails every backup that references it."""
    make_bot_db(db_path, rows=3000)
    first = backup(run_cli, repo_config)
    add_trades(db_path, 100)
    second = backup(run_cli, repo_config)
    repository = Repository.of(catalog_of(db_path))
    firsts = repository.chunks_of(first["chunk_list"])
    seconds = repository.chunks_of(second["chunk_list"])
    verified = run_cli("verify", "--all", "--json", *repo_config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    chunks = json.loads(verified.stdout)["chunks"]
    assert chunks == {"read": len(firsts) + len(seconds),
                      "hashed": len(set(firsts) | set(seconds))}
    assert chunks["hashed"] < chunks["read"]
    single = run_cli("verify", second["id"], "--json", *repo_config)
    assert json.loads(single.stdout)["chunks"] == {"read": len(seconds),
                                                   "hashed": len(set(seconds))}
    _flip(repository, sorted(set(firsts) & set(seconds))[0])
    verified = run_cli("verify", "--all", "--json", *repo_config)
    assert verified.returncode == 4
    assert {r["id"] for r in json.loads(verified.stdout)["results"] if not r["ok"]} == \
        {first["id"], second["id"]}


def _flip(repository: Repository, chunk: bytes) -> None:
    blob = repository.index()[chunk]
    path = repository.pack_path(blob.pack)
    data = bytearray(path.read_bytes())
    data[blob.offset + blob.length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


BACKUP_POINTS = ("repository:pack-written", "repository:indexed", "backup:chunked",
                 "backup:manifested")
PRUNE_POINTS = ("prune:manifest-deleted", "gc:repacked", "gc:index-removed")


@pytest.mark.parametrize("point", BACKUP_POINTS)
def test_a_backup_killed_at_any_step_leaves_every_listed_backup_restorable(
        point: str, db_path: Path, run_cli: Cli, repo_config: list[str],
        child_env: Callable[..., dict[str, str]]) -> None:
    make_bot_db(db_path, rows=2000)
    first = backup(run_cli, repo_config)
    add_trades(db_path, 500)
    crashed = run_cli("backup", *repo_config, env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    _every_listed_backup_verifies(run_cli, repo_config)
    # the next prune leaves no pack that no manifest references
    assert run_cli("prune", *repo_config).returncode == 0
    _no_orphan_chunks(catalog_of(db_path), run_cli, repo_config)
    assert run_cli("restore", first["id"], "--yes", *repo_config).returncode == 0


@pytest.mark.parametrize("point", PRUNE_POINTS)
def test_a_prune_killed_at_any_step_leaves_every_listed_backup_restorable(
        point: str, db_path: Path, run_cli: Cli, repo_config: list[str],
        child_env: Callable[..., dict[str, str]]) -> None:
    make_bot_db(db_path, rows=1500)
    backup(run_cli, repo_config)
    # each backup rewrites all rows or most of them: the last one leaves the one
    # before it a pack mostly of garbage, which prune rewrites (gc:repacked)
    for pad, share in (("b", 0.7), ("c", 1.0), ("d", 0.7)):
        with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            conn.execute("UPDATE trades SET pad = ? WHERE id <= ?", (pad * 300,
                                                                    int(1500 * share)))
        backup(run_cli, repo_config)
    _keep_last(repo_config, 1)
    crashed = run_cli("prune", *repo_config, env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    listed = _every_listed_backup_verifies(run_cli, repo_config)
    assert run_cli("prune", *repo_config).returncode == 0
    _no_orphan_chunks(catalog_of(db_path), run_cli, repo_config)
    newest = listed[-1]
    assert run_cli("restore", newest, "--yes", *repo_config).returncode == 0


def _every_listed_backup_verifies(run_cli: Cli, where: list[str]) -> list[str]:
    verified = run_cli("verify", "--all", "--json", *where)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = json.loads(verified.stdout)["results"]
    assert rows
    assert all(r["ok"] for r in rows)
    return [r["id"] for r in rows]


def _no_orphan_chunks(catalog: Path, run_cli: Cli, where: list[str]) -> None:
    listed = json.loads(run_cli("backups", "--json", *where).stdout)
    referenced = {c for row in listed for c in _chunks_of(catalog, row["id"])}
    repository = Repository.of(catalog)
    stored: set[bytes] = set()
    for idx in sorted(repository.packs_dir.glob("*/*.idx")):
        stored |= set(read_index(idx))
    assert referenced <= stored
    leftovers = [p.name for p in repository.packs_dir.glob("*/*")
                 if p.name.startswith(".tmp-")]
    assert leftovers == []
    # every pack still there holds at least one referenced chunk
    for idx in repository.packs_dir.glob("*/*.idx"):
        assert set(read_index(idx)) & referenced, idx.name


def _chunks_of(catalog: Path, backup_id: str) -> list[bytes]:
    """The backup's chunk list and the chunks it names."""
    chunk_list = json.loads((catalog / f"{backup_id}.json").read_text())["chunk_list"]
    repository = Repository.of(catalog)
    return [bytes.fromhex(chunk_list), *repository.chunks_of(chunk_list)]


def test_a_file_backup_and_a_repository_backup_live_in_one_catalog(
        db_path: Path, db_url: str, run_cli: Cli, repo_config: list[str]) -> None:
    """Old catalogs keep working: a full-copy backup made before stays listed,
    verifiable and restorable beside the repository's."""
    make_bot_db(db_path, rows=800)
    old = backup(run_cli, ["--db", db_url])
    assert old["storage"] == "file"
    rows = add_trades(db_path, 50)
    new = backup(run_cli, repo_config)
    _every_listed_backup_verifies(run_cli, repo_config)
    assert run_cli("restore", old["id"], "--yes", *repo_config).returncode == 0
    assert count(db_path) == 800
    assert run_cli("restore", new["id"], "--yes", *repo_config).returncode == 0
    assert count(db_path) == rows


def test_a_damaged_pack_index_is_refused_with_its_name(tmp_path: Path) -> None:
    idx = tmp_path / ("ab" * 16 + ".idx")
    idx.write_bytes(b"DBGIDX1\n" + b"\x00" * 48)  # a torn entry: 48 of its 49 bytes
    with pytest.raises(VerificationError, match=idx.name):
        read_index(idx)
    idx.write_bytes(b"DBGIDX1\n" + b"\x01" * 48 + b"\x09")  # codec 9: none such
    with pytest.raises(VerificationError, match="codec 9"):
        read_index(idx)


def test_a_damaged_pack_index_stops_no_later_backup_and_loses_none(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    """One bad index file (bit rot, a torn copy) must not fail every later backup: a
    bot pauses its orders when its backup fails. The chunks it indexed count as absent
    and are stored again, and since older backups may need those new packs too, the
    next prune reads every backup's chunk list before it deletes anything."""
    make_bot_db(db_path, rows=1500)
    old = backup(run_cli, repo_config)
    packs = catalog_of(db_path) / "repository" / "packs"
    (idx,) = packs.glob("*/*.idx")
    idx.write_bytes(idx.read_bytes()[:30])  # torn inside its first entry
    same = backup(run_cli, repo_config)  # the same content: the same chunk list
    assert same["chunk_list"] == old["chunk_list"]
    add_trades(db_path, 40)
    new = backup(run_cli, repo_config)
    pruned = run_cli("prune", *repo_config)
    assert pruned.returncode == 0, pruned.stderr
    assert f"{idx}: pack index is damaged" in pruned.stderr
    assert idx.exists()  # what it holds cannot be known: collection leaves it
    assert idx.with_suffix(".pack").exists()
    for made in (old, same, new):  # old and same share every chunk, stored again
        checked = run_cli("verify", made["id"], *repo_config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    restored = run_cli("restore", new["id"], "--yes", *repo_config)
    assert restored.returncode == 0, restored.stderr
    add_trades(db_path, 1)
    idx.write_bytes(b"DBGIDX1\n" + b"\x07" * 10)  # damaged again
    for leftover in packs.glob("*/*.idx"):
        if leftover != idx:  # every sound pack gone: old's chunks are only in idx's
            leftover.unlink()
            leftover.with_suffix(".pack").unlink()
    refused = run_cli("verify", old["id"], *repo_config)
    assert refused.returncode == 4
    assert "is missing from the repository" in refused.stdout
    assert f"{idx}: pack index is damaged" in refused.stdout
    assert run_cli("backup", *repo_config).returncode == 0


def test_convert_moves_full_copies_into_the_repository_and_each_still_restores(
        db_path: Path, db_url: str, run_cli: Cli, repo_config: list[str]) -> None:
    make_bot_db(db_path, rows=1500)
    made = []
    for _ in range(3):
        rows = add_trades(db_path, 100)
        made.append((backup(run_cli, ["--db", db_url])["id"], rows))
    catalog = catalog_of(db_path)
    files = sorted(p.name for p in catalog.glob("*.sqlite"))
    assert len(files) == 3
    asked = run_cli("convert", *repo_config)  # no terminal: it must not go ahead
    assert asked.returncode == 2
    assert sorted(p.name for p in catalog.glob("*.sqlite")) == files
    converted = run_cli("convert", "--yes", "--json", *repo_config)
    assert converted.returncode == 0, converted.stderr
    report = json.loads(converted.stdout)
    assert [c["id"] for c in report["converted"]] == [i for i, _ in made]
    assert report["added"] < 0.6 * report["freed"]  # three copies, stored about once
    assert list(catalog.glob("*.sqlite")) == []
    _every_listed_backup_verifies(run_cli, repo_config)
    for backup_id, rows in reversed(made):
        assert run_cli("restore", backup_id, "--yes", *repo_config).returncode == 0
        assert count(db_path) == rows
    again = run_cli("convert", "--yes", "--json", *repo_config)
    assert json.loads(again.stdout)["converted"] == []


@pytest.mark.parametrize("point", ["convert:chunked", "convert:manifested"])
def test_a_convert_killed_at_any_step_loses_no_backup(
        point: str, db_path: Path, db_url: str, run_cli: Cli, repo_config: list[str],
        child_env: Callable[..., dict[str, str]]) -> None:
    make_bot_db(db_path, rows=800)
    old = backup(run_cli, ["--db", db_url])
    crashed = run_cli("convert", "--yes", *repo_config,
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    _every_listed_backup_verifies(run_cli, repo_config)
    assert run_cli("convert", "--yes", *repo_config).returncode == 0
    assert run_cli("prune", *repo_config).returncode == 0
    assert list(catalog_of(db_path).glob("*.sqlite")) == []
    assert run_cli("restore", old["id"], "--yes", *repo_config).returncode == 0
    assert count(db_path) == 800


def test_backups_shows_what_each_backup_added_once_the_repository_is_used(
        db_path: Path, db_url: str, run_cli: Cli, repo_config: list[str]) -> None:
    make_bot_db(db_path, rows=1500)
    backup(run_cli, ["--db", db_url])
    plain = run_cli("backups", "--db", db_url).stdout.splitlines()
    assert "ADDED" not in plain[0]
    backup(run_cli, repo_config)
    add_trades(db_path, 20)
    newest = backup(run_cli, repo_config)
    listed = run_cli("backups", *repo_config).stdout.splitlines()
    assert listed[0].split()[:8] == ["ID", "TIME", "(UTC)", "REASON", "SIZE", "ADDED",
                                    "VERIFIED", "SHA256"]
    row = next(line for line in listed if line.startswith(newest["id"])).split()
    assert " ".join(row[5:7]) == size(newest["added"])
    assert newest["added"] < newest["size"]


def test_a_collection_record_that_does_not_fit_the_packs_deletes_nothing(
        db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    """collected.json edited, or put back from an older copy of the repository, so that
    it lists every backup but not their packs: trusted, it would make every pack "new"
    and referenced by no new backup. A pack it does not list that is older than it
    makes the collection a full one instead."""
    make_bot_db(db_path, rows=1500)
    made = []
    for _ in range(3):
        add_trades(db_path, 50)
        made.append(backup(run_cli, repo_config))
    repository = Repository.of(catalog_of(db_path))
    record = repository.directory / "collected.json"
    state = json.loads(record.read_text())
    assert state["packs"]
    record.write_text(json.dumps({"lists": state["lists"], "packs": []}))
    packs = sorted(repository.packs_dir.glob("*/*"))
    report = repository.collect(state["lists"])
    assert report.full
    assert report.packs_removed == []
    assert sorted(repository.packs_dir.glob("*/*")) == packs
    for each in made:
        checked = run_cli("verify", each["id"], *repo_config)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_store_over_several_packs_reads_back_what_it_let_go(tmp_path: Path) -> None:
    """A pack written in full lets go of its index entries (a 1 GiB store would keep
    13 MiB of them); a chunk of it met again later in the same store, or read back
    through the same index, comes from its index file."""
    import os

    from dbguard_plugin.catalog.repository import PACK_TARGET

    first = os.urandom(PACK_TARGET + 4096)
    source = tmp_path / "source.bin"
    source.write_bytes(first + first[:1 << 20])  # the first MiB again, in a later pack
    repository = Repository(tmp_path / "repository")
    stored = repository.store(source)
    assert stored.raw_size == len(first) + (1 << 20)
    # stored plain, the chunk list included: a repeat counts its length, read back
    assert stored.size == stored.raw_size + 32 * stored.chunk_count
    assert stored.added == len(first) + 32 * stored.chunk_count
    assert len(list((tmp_path / "repository" / "packs").glob("*/*.idx"))) == 2
    ids = repository.chunks_of(stored.chunk_list)
    repeat = len(first) // 4096
    assert ids[:256] == ids[repeat:repeat + 256]
    out = tmp_path / "out.bin"
    with repository.reading(), out.open("wb") as fh:
        repository.read_into(stored.chunk_list, fh)
    assert out.read_bytes() == source.read_bytes()


def test_a_prune_that_drops_nothing_reads_only_the_packs_written_since(
        db_path: Path, run_cli: Cli, repo_config: list[str],
        child_env: Callable[..., dict[str, str]]) -> None:
    """collected.json remembers the last collection: while no backup is dropped, only
    packs written since can be garbage (an interrupted backup's among them), and a full
    collection afterwards finds nothing the incremental ones left."""
    make_bot_db(db_path, rows=2000)
    for _ in range(3):
        add_trades(db_path, 100)
        backup(run_cli, repo_config)  # each backup's prune collects
    catalog = catalog_of(db_path)
    repository = Repository.of(catalog)
    lists = sorted(json.loads(p.read_text())["chunk_list"] for p in catalog.glob("[!.]*.json"))
    assert (repository.directory / "collected.json").is_file()
    known = {p.stem for p in repository.packs_dir.glob("*/*.idx")}
    add_trades(db_path, 300)
    killed = run_cli("backup", *repo_config,
                     env=child_env(**{CRASH_ENV: "repository:indexed"}))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    orphans = {p.stem for p in repository.packs_dir.glob("*/*.idx")} - known
    assert len(orphans) == 1

    report = repository.collect(lists)
    assert (report.full, report.packs_read, set(report.packs_removed)) == (False, 1, orphans)
    again = repository.collect(lists)
    assert (again.full, again.packs_read, again.packs_removed) == (False, 0, [])

    (repository.directory / "collected.json").unlink()
    full = repository.collect(lists)
    assert (full.full, full.packs_read) == (True, len(known))
    assert full.packs_removed == full.packs_rewritten == []
    # a dropped backup makes the next collection a full one
    dropped = next(p for p in catalog.glob("[!.]*.json")
                   if json.loads(p.read_text())["chunk_list"] == lists[0])
    dropped.unlink()
    assert repository.collect(lists[1:]).full
    assert len(_every_listed_backup_verifies(run_cli, repo_config)) == 2


def test_a_symlinked_pack_directory_is_neither_read_nor_cleaned(
        tmp_path: Path, db_path: Path, run_cli: Cli, repo_config: list[str]) -> None:
    """A link planted in packs/ leads outside dbguard's directories: prune's collection
    neither reads the index files there nor deletes what looks like its leftovers."""
    make_bot_db(db_path, rows=500)
    first = backup(run_cli, repo_config)
    outside = tmp_path / "outside"
    outside.mkdir()
    bait = [outside / f"{'ab' * 16}.pack", outside / ".tmp-notes.txt",
            outside / f"{'cd' * 16}.idx"]
    for path in bait:
        path.write_bytes(b"not dbguard's")
    repository = Repository.of(catalog_of(db_path))
    (repository.packs_dir / "zz").symlink_to(outside)
    assert run_cli("prune", *repo_config).returncode == 0
    assert all(path.read_bytes() == b"not dbguard's" for path in bait)
    assert _every_listed_backup_verifies(run_cli, repo_config) == [first["id"]]


@pytest.mark.parametrize("chunk_list", ["", None], ids=["empty", "missing"])
def test_a_repository_manifest_without_its_chunk_list_is_damaged_and_deletes_nothing(
        db_path: Path, run_cli: Cli, repo_config: list[str], chunk_list: str | None) -> None:
    """A repository backup's manifest whose chunk list was emptied or dropped (by hand, by
    a bad copy) is listed as damaged, refused by restore, and prune deletes no pack."""
    make_bot_db(db_path, rows=2000)
    kept = backup(run_cli, repo_config)
    add_trades(db_path, 500)
    bad = backup(run_cli, repo_config)
    path = catalog_of(db_path) / f"{bad['id']}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if chunk_list is None:
        del data["chunk_list"]
    else:
        data["chunk_list"] = chunk_list
    path.write_text(json.dumps(data), encoding="utf-8")
    packs = sorted(p.name for p in (catalog_of(db_path) / "repository").rglob("*.pack"))

    listed = run_cli("backups", *repo_config)
    assert listed.returncode == 0, listed.stderr
    assert f"DAMAGED {bad['id']}.json" in listed.stdout + listed.stderr
    assert "chunk_list is missing or empty" in listed.stdout + listed.stderr
    restored = run_cli("restore", bad["id"], "--yes", *repo_config)
    assert restored.returncode == 4, restored.stdout + restored.stderr
    assert "chunk_list is missing or empty" in restored.stderr
    assert run_cli("prune", *repo_config).returncode == 0
    assert sorted(p.name for p in (catalog_of(db_path) / "repository").rglob("*.pack")) == packs
    assert path.exists()
    verified = run_cli("verify", kept["id"], *repo_config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
