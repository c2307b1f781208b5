"""Server dumps in the deduplicated repository (``storage = "repository"``), through the
CLI against the real PostgreSQL and MariaDB: consecutive dumps of a slowly changing
database share most of their chunks, each backup verifies and restores exactly its own
rows, a damaged chunk fails only the backups that need it, prune collects, and a backup
killed once its chunks are stored leaves every listed backup verifiable.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from cli_runs import Cli, CliResult

from dbguard_plugin.catalog.repository import Repository, read_index

pytestmark = pytest.mark.servers

CRASH_ENV = "DBGUARD_CRASH_AT"
ROWS = 20_000
#: Rows a session changes between the two backups: one early, one in the middle and
#: the last, so that a dump compressed as a whole would differ almost everywhere.
CHANGED = (1, ROWS // 2, ROWS)


class ServerDb(Protocol):
    """What these tests use of the ``server_db`` fixture (tests/servers/conftest.py)."""

    kind: str
    url: str

    def run(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]: ...

    def create_tables(self, *names: str) -> None: ...


_FILL = {
    "postgresql": ["INSERT INTO fills (id, qty) SELECT g, g * 0.5 "
                   f"FROM generate_series(1, {ROWS}) AS g",
                   "INSERT INTO ledger (fill_id, note) SELECT g, "
                   "'fill ' || g || ': bought on the dip, sold into strength, fee paid' "
                   f"FROM generate_series(1, {ROWS}) AS g"],
    "mariadb": [f"INSERT INTO fills (id, qty) SELECT seq, seq * 0.5 FROM seq_1_to_{ROWS}",
                "INSERT INTO ledger (fill_id, note) SELECT seq, CONCAT('fill ', seq, "
                "': bought on the dip, sold into strength, fee paid') "
                f"FROM seq_1_to_{ROWS}"],
}


def fill(db: ServerDb) -> None:
    """A bot's fills and their ledger: a dump of a few MB, many chunks."""
    db.create_tables("fills", "ledger")
    for sql in _FILL[db.kind]:
        db.run(sql)


def trade_a_little(db: ServerDb) -> None:
    """A session's worth of change: a few rows updated, a few added."""
    for n in CHANGED:
        db.run("UPDATE ledger SET note = %s WHERE fill_id = %s", (f"fill {n}: corrected", n))
    for n in range(ROWS + 1, ROWS + 6):
        db.run("INSERT INTO fills (id, qty) VALUES (%s, %s)", (n, n * 0.5))


def rows(db: ServerDb) -> list[tuple[Any, ...]]:
    """Every row of both tables, as the server returns them."""
    return (db.run("SELECT id, qty FROM fills ORDER BY id")
            + db.run("SELECT fill_id, note FROM ledger ORDER BY fill_id"))


@pytest.fixture
def repo_config(tmp_path: Path, server_db: ServerDb) -> list[str]:
    """The CLI options of a bot on *server_db* whose dbguard keeps its backups in the
    repository, chunks compressed with zstd (the dump tool sees none of that)."""
    path = tmp_path / "bot.json"
    path.write_text(json.dumps({"dbguard": {
        "db_url": server_db.url, "storage": "repository", "compression": "zstd",
        "backup_dir": str(tmp_path / "backups"), "keep_last": 100, "keep_daily": 0,
        "keep_weekly": 0}}))
    return ["--config", str(path)]


def catalog_of(where: list[str]) -> Path:
    return Path(json.loads(Path(where[1]).read_text())["dbguard"]["backup_dir"])


def backup(run_cli: Cli, where: list[str]) -> dict[str, Any]:
    result = run_cli("backup", "--json", *where)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def restore(run_cli: Cli, backup_id: str, where: list[str]) -> CliResult:
    return run_cli("restore", backup_id, "--yes", *where)


def verify_all(run_cli: Cli, where: list[str]) -> tuple[CliResult, dict[str, bool]]:
    """``dbguard verify --all --json``, and each listed backup's ok."""
    result = run_cli("verify", "--all", "--json", *where)
    return result, {r["id"]: r["ok"] for r in json.loads(result.stdout)["results"]}


def test_a_second_dump_adds_little_and_each_backup_restores_its_own_rows(
        server_db: ServerDb, run_cli: Cli, repo_config: list[str]) -> None:
    fill(server_db)
    first_rows = rows(server_db)
    first = backup(run_cli, repo_config)
    trade_a_little(server_db)
    second_rows = rows(server_db)
    second = backup(run_cli, repo_config)

    for made in (first, second):
        assert made["storage"] == "repository"
        assert made["file"] == ""
        assert made["compression"] == "zstd"  # the chunks' codec
        assert made["sha256"] == made["chunk_list"]
    assert first["added"] == first["size"] > 0
    # a plain dump cut at content-defined boundaries: the few changed rows touch a few
    # chunks (a compressed archive would have changed from the first of them onward)
    assert 0 < second["added"] < 0.3 * second["size"]
    verified, ok = verify_all(run_cli, repo_config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ok == {first["id"]: True, second["id"]: True}

    preview = run_cli("restore", first["id"], "--preview", "--json", *repo_config)
    assert preview.returncode == 0, preview.stderr
    done = restore(run_cli, first["id"], repo_config)
    assert done.returncode == 0, done.stderr
    assert rows(server_db) == first_rows
    # the safety backup went into the repository too, and puts the second state back
    rolled = run_cli("rollback", "--yes", *repo_config)
    assert rolled.returncode == 0, rolled.stderr
    assert rows(server_db) == second_rows
    listed = json.loads(run_cli("backups", "--json", *repo_config).stdout)
    assert len(listed) == 4  # two made here, two safety backups
    assert {row["storage"] for row in listed} == {"repository"}
    # the reassembled copies were scratch files: none is left in the catalog
    assert not list(catalog_of(repo_config).glob(".tmp-*"))


def _flip(repository: Repository, chunk: bytes) -> None:
    blob = repository.index()[chunk]
    path = repository.pack_path(blob.pack)
    data = bytearray(path.read_bytes())
    data[blob.offset + blob.length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_chunk_fails_only_the_backup_that_needs_it(
        server_db: ServerDb, run_cli: Cli, repo_config: list[str]) -> None:
    fill(server_db)
    first_rows = rows(server_db)
    first = backup(run_cli, repo_config)
    trade_a_little(server_db)
    second = backup(run_cli, repo_config)
    repository = Repository.of(catalog_of(repo_config))
    only_second = sorted(set(repository.chunks_of(second["chunk_list"]))
                         - set(repository.chunks_of(first["chunk_list"])))
    assert only_second
    _flip(repository, only_second[0])

    verified, ok = verify_all(run_cli, repo_config)
    assert verified.returncode == 4, verified.stdout + verified.stderr
    assert ok == {first["id"]: True, second["id"]: False}
    assert only_second[0].hex()[:16] in verified.stdout  # the chunk is named
    refused = restore(run_cli, second["id"], repo_config)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "nothing was changed" in refused.stderr
    assert len(rows(server_db)) == 2 * ROWS + 5  # the live database is untouched
    done = restore(run_cli, first["id"], repo_config)
    assert done.returncode == 0, done.stderr
    assert rows(server_db) == first_rows


def _keep_last(where: list[str], last: int) -> None:
    config = json.loads(Path(where[1]).read_text())
    config["dbguard"]["keep_last"] = last
    Path(where[1]).write_text(json.dumps(config))


def _no_orphan_chunks(run_cli: Cli, where: list[str]) -> None:
    """Every listed backup's chunks are stored, and every pack holds one of them."""
    catalog = catalog_of(where)
    repository = Repository.of(catalog)
    referenced: set[bytes] = set()
    for row in json.loads(run_cli("backups", "--json", *where).stdout):
        chunk_list = json.loads((catalog / f"{row['id']}.json").read_text())["chunk_list"]
        referenced |= {bytes.fromhex(chunk_list), *repository.chunks_of(chunk_list)}
    stored: set[bytes] = set()
    for idx in sorted(repository.packs_dir.glob("*/*.idx")):
        chunks = set(read_index(idx))
        assert chunks & referenced, f"{idx.name} holds no referenced chunk"
        stored |= chunks
    assert referenced <= stored
    assert not [p for p in repository.packs_dir.glob("*/*") if p.name.startswith(".tmp-")]


def test_prune_collects_and_the_remaining_backup_still_restores(
        server_db: ServerDb, run_cli: Cli, repo_config: list[str]) -> None:
    fill(server_db)
    first = backup(run_cli, repo_config)
    # every ledger row settled: nearly all of the first backup's chunks are its own
    server_db.run("UPDATE ledger SET note = " + (
        "note || ' (settled)'" if server_db.kind == "postgresql"
        else "CONCAT(note, ' (settled)')"))
    second_rows = rows(server_db)
    second = backup(run_cli, repo_config)
    repository = Repository.of(catalog_of(repo_config))
    before = repository.stored_bytes()

    _keep_last(repo_config, 1)
    pruned = run_cli("prune", "--json", *repo_config)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed"] == [first["id"]]
    # the chunks only the first backup had are gone with it (its pack, mostly
    # garbage now, was rewritten with the few chunks the second still needs)
    assert repository.stored_bytes() < 0.8 * before
    _no_orphan_chunks(run_cli, repo_config)
    server_db.run("DELETE FROM ledger")
    done = restore(run_cli, second["id"], repo_config)
    assert done.returncode == 0, done.stderr
    assert rows(server_db) == second_rows


def test_a_backup_killed_once_its_chunks_are_stored_leaves_every_backup_verifiable(
        server_db: ServerDb, run_cli: Cli, repo_config: list[str],
        child_env: Callable[..., dict[str, str]]) -> None:
    fill(server_db)
    first_rows = rows(server_db)
    first = backup(run_cli, repo_config)
    trade_a_little(server_db)
    crashed = run_cli("backup", *repo_config,
                      env=child_env(**{CRASH_ENV: "server-backup:chunked"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    verified, ok = verify_all(run_cli, repo_config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert ok == {first["id"]: True}  # the killed backup has no manifest: it never was
    # the next prune removes its dump and the chunks no manifest names
    assert run_cli("prune", *repo_config).returncode == 0
    assert not list(catalog_of(repo_config).glob(".tmp-*"))
    _no_orphan_chunks(run_cli, repo_config)
    done = restore(run_cli, first["id"], repo_config)
    assert done.returncode == 0, done.stderr
    assert rows(server_db) == first_rows
