"""One database, one identity: no spelling, link or alias gets past the guard.

The matrix: every replacing or deleting command x every spelling of the database x a
bot process holding orders in flight through the documented API (on the plain path).
Each cell is vetoed with exit 3 naming the orders and the bot's pid (a hard link is
refused with its own reason), and the live database's content is unchanged.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runs import Cli

from dbguard_plugin import Guard, signals
from dbguard_plugin.location import identity_of, locate
from dbguard_plugin.operations.restore import restore

SPELLINGS = ("absolute", "relative", "dotdot", "file-symlink", "dir-symlink", "file-uri",
             "hard-link")


def content(path: Path) -> list[str]:
    """Every row and every schema statement, read through SQLite (WAL included)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def spell(kind: str, db: Path) -> str:
    """A SQLite URL naming *db* in the given way; relative ones are relative to db's
    grandparent, where the CLI runs. Creates the links it needs."""
    base = db.parent.parent
    if kind == "absolute":
        return f"sqlite:///{db}"
    if kind == "relative":
        return f"sqlite:///{db.parent.name}/{db.name}"
    if kind == "dotdot":
        return f"sqlite:///{db.parent}/../{db.parent.name}/{db.name}"
    if kind == "file-symlink":
        link = db.with_name("link.sqlite")
        link.symlink_to(db.name)
        return f"sqlite:///{link}"
    if kind == "dir-symlink":
        alias = base / "alias"
        alias.symlink_to(db.parent.name, target_is_directory=True)
        return f"sqlite:///{alias}/{db.name}"
    if kind == "file-uri":
        return f"sqlite:///file:{db}?mode=rw&uri=true"
    assert kind == "hard-link"
    hard = db.with_name("hard.sqlite")
    os.link(db, hard)
    return f"sqlite:///{hard}"


@pytest.fixture
def live(tmp_path: Path, make_trades_db: Callable[[Path, int], None]) -> dict[str, object]:
    """A database with a backup and a recorded restore (so rollback has something to put
    back), and two bot configs whose profiles name the database: one active (switch),
    one not (delete --delete-data)."""
    db = tmp_path / "data" / "tradesv3.sqlite"
    db.parent.mkdir()
    make_trades_db(db, 200)
    guard = Guard(db_url=f"sqlite:///{db}")
    try:
        backup_id = guard.backup("manual").id
        restore(guard, backup_id)
    finally:
        guard.close()
    return {"db": db, "backup_id": backup_id}


def _profiles(run_cli: Cli, make_trades_db: Callable[[Path, int], None], tmp_path: Path,
              url: str) -> dict[str, str]:
    """Config A: profile paper (the database) active. Config B: profile paper names the
    database, another profile is active, and nothing else uses it."""
    configs = {}
    for name in ("switching", "deleting"):
        folder = tmp_path / name
        folder.mkdir()
        other = folder / "other.sqlite"
        make_trades_db(other, 200)
        config = folder / "config.json"
        config.write_text(json.dumps({"db_url": f"sqlite:///{other}"}), encoding="utf-8")
        for args in (("profile", "create", "paper", "--kind", "testing", "--db-url", url),
                     ("profile", "switch", "paper" if name == "switching" else "development",
                      "--yes")):
            made = run_cli(*args, "--config", str(config))
            assert made.returncode == 0, made.stdout + made.stderr
        configs[name] = str(config)
    return configs


@pytest.mark.parametrize("kind", SPELLINGS)
def test_every_command_through_every_spelling_is_vetoed_by_a_bot_in_flight(
    kind: str, live: dict[str, object], tmp_path: Path, spawn, scripts, run_cli,
    make_trades_db,
) -> None:
    db = live["db"]
    assert isinstance(db, Path)
    before = content(db)
    # The bot trades first; the other name appears while it does (an operator's ln).
    bot = spawn(scripts["bot_with_orders"], f"sqlite:///{db}")
    url = spell(kind, db)
    configs = _profiles(run_cli, make_trades_db, tmp_path, url) if kind != "hard-link" else {}
    db_args = ("--db", url)
    commands = {
        "restore": ("restore", str(live["backup_id"]), "--yes", *db_args),
        "rollback": ("rollback", "--yes", *db_args),
        "move": ("move", str(tmp_path / "moved.sqlite"), "--yes", *db_args),
        "check vacuum": ("check", "vacuum", *db_args),
        "check delete": ("check", "delete", *db_args),
        "check restore": ("check", "restore", *db_args),
    }
    if configs:
        commands["profile switch"] = ("profile", "switch", "development", "--yes",
                                      "--config", configs["switching"])
        commands["profile delete --delete-data"] = (
            "profile", "delete", "paper", "--delete-data", "--yes",
            "--config", configs["deleting"])
    for what, args in commands.items():
        result = run_cli(*args)
        said = result.stdout + result.stderr
        assert result.returncode == 3, f"{what} through {kind}: {said}"
        if kind == "hard-link":
            assert "hard links" in said, f"{what}: {said}"
        else:
            assert f"in flight in pid {bot.pid}" in said, f"{what} through {kind}: {said}"
            assert "A-1001" in said, f"{what}: {said}"
            assert "B-2002" in said, f"{what}: {said}"
        assert content(db) == before, f"{what} through {kind} changed the database"
    assert not (tmp_path / "moved.sqlite").exists()
    bot.send("exit")
    assert bot.wait() == 0


@pytest.mark.parametrize("kind", [k for k in SPELLINGS if k != "hard-link"])
def test_every_spelling_has_one_identity_one_lease_and_one_catalog(
    kind: str, live: dict[str, object]
) -> None:
    db = live["db"]
    assert isinstance(db, Path)
    cwd = os.getcwd()
    os.chdir(db.parent.parent)  # where the relative spelling is relative to
    try:
        spelled = locate(spell(kind, db))
    finally:
        os.chdir(cwd)
    plain = locate(f"sqlite:///{db}")
    assert spelled.identity == plain.identity == str(db.resolve())
    assert spelled.sqlite_path == plain.sqlite_path
    assert spelled.state_dir == plain.state_dir
    guard = Guard(db_url=f"sqlite:///{spelled.sqlite_path}")
    try:
        assert [m.id for m in guard.catalog.manifests()]  # the same catalog, accepted
        guard.catalog.prepare()
    finally:
        guard.close()


def test_backups_and_restores_through_a_directory_symlink_use_the_one_catalog(
    live: dict[str, object], tmp_path: Path, run_cli,
) -> None:
    db = live["db"]
    assert isinstance(db, Path)
    url = spell("dir-symlink", db)
    made = run_cli("backup", "--db", url, "--json")
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    listed = run_cli("backups", "--db", f"sqlite:///{db}", "--json")
    assert backup_id in [b["id"] for b in json.loads(listed.stdout)]
    done = run_cli("restore", backup_id, "--yes", "--db", url)
    assert done.returncode == 0, done.stderr


def test_a_hard_linked_database_is_refused_everywhere_and_reported(
    live: dict[str, object], tmp_path: Path, run_cli, spawn,
) -> None:
    db = live["db"]
    assert isinstance(db, Path)
    before = content(db)
    url = spell("hard-link", db)
    for args in (("backup",), ("restore", str(live["backup_id"]), "--yes"),
                 ("restore", str(live["backup_id"]), "--preview")):
        for spelling in (url, f"sqlite:///{db}"):  # both names: each is one of two
            result = run_cli(*args, "--db", spelling)
            assert result.returncode in (2, 3), result.stdout + result.stderr
            assert "hard links" in result.stderr, result.stderr
    assert content(db) == before
    doctor = run_cli("doctor", "--db", url, "--json")
    findings = {f["check"]: f for f in json.loads(doctor.stdout)["findings"]}
    assert findings["database file"]["status"] == "fail"
    assert "2 hard links" in findings["database file"]["message"]
    status = run_cli("status", "--db", url, "--json")
    assert status.returncode == 0
    assert any("hard links" in w for w in json.loads(status.stdout)["warnings"])
    bot = spawn("""
        import sys
        from dbguard_plugin import Guard, signals
        guard = Guard(db_url=sys.argv[1])
        guard.start_session("S-h")
        print("READY", guard.admit_order(timeout=0), guard.paused is not None, flush=True)
        guard.close()
    """, url, ready=None)
    line = bot.expect("READY")
    assert line == "READY False True", "a bot on a hard-linked file places no order"


def test_session_refused_where_the_database_is_gone_but_its_backups_are_not(
    live: dict[str, object], run_cli,
) -> None:
    db = live["db"]
    assert isinstance(db, Path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    heard: list[str] = []

    def paused(sender: Guard, why: str, **extra: object) -> None:
        heard.append(why)

    guard = Guard(db_url=f"sqlite:///{db}")
    try:
        with signals.orders_paused.connected_to(paused, sender=guard):
            guard.start_session("S-gone")
        assert len(heard) == 1
        assert "does not exist" in heard[0]
        assert not guard.admit_order(timeout=0)
        assert guard.paused is not None
        assert "does not exist" in guard.paused
    finally:
        guard.close()
    status = run_cli("status", "--db", f"sqlite:///{db}")
    assert status.returncode == 0
    assert "does not exist" in status.stdout
    assert "restore" in status.stdout


def test_profile_delete_data_sees_the_production_database_through_a_symlink(
    tmp_path: Path, run_cli, make_trades_db,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "tradesv3.sqlite"
    make_trades_db(db, 200)
    (tmp_path / "alias").symlink_to("data", target_is_directory=True)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": f"sqlite:///{db}"}), encoding="utf-8")
    cfg = ("--config", str(config))
    created = run_cli("profile", "create", "paper", "--kind", "testing", "--db-url",
                      f"sqlite:///{tmp_path}/alias/tradesv3.sqlite", *cfg)
    assert created.returncode == 0, created.stderr
    assert run_cli("profile", "switch", "production", "--yes", *cfg).returncode == 0
    before = content(db)
    deleted = run_cli("profile", "delete", "paper", "--delete-data", "--yes", *cfg)
    assert deleted.returncode == 2, deleted.stdout + deleted.stderr
    assert "uses the same database" in deleted.stderr
    assert content(db) == before


@pytest.mark.parametrize(("one", "other"), [
    ("postgresql://bot:pw@localhost/trades", "postgresql+psycopg://bot@127.0.0.1:5432/trades"),
    ("postgresql://bot@localhost/trades?sslmode=require", "postgres://ops@[::1]/trades"),
    ("mysql+pymysql://root@127.0.0.1:3306/trades", "mariadb://root@localhost/trades"),
])
def test_server_databases_have_one_identity_whatever_the_spelling(one: str, other: str) -> None:
    assert locate(one).identity == locate(other).identity
    assert locate(one).state_dir == locate(other).state_dir
    assert "pw" not in locate(one).identity


def test_different_server_databases_stay_apart() -> None:
    base = locate("postgresql://bot@localhost/trades").identity
    assert locate("postgresql://bot@localhost/other").identity != base
    assert locate("postgresql://bot@localhost:5433/trades").identity != base
    assert locate("postgresql://bot@db.example/trades").identity != base


def test_old_markers_and_sources_spelled_another_way_still_match(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "alias").symlink_to("data", target_is_directory=True)
    assert identity_of(f"{tmp_path}/alias/x.sqlite") == str((data / "x.sqlite").resolve())
    assert identity_of(f"sqlite:///{tmp_path}/alias/x.sqlite") == str(
        (data / "x.sqlite").resolve())


def test_a_server_directory_named_after_the_old_spelling_is_taken_along() -> None:
    import hashlib

    from dbguard_plugin.location import user_state_dir

    url = "postgresql+psycopg://bot@127.0.0.1/trades_legacy"
    spelled = locate(url)
    digest = hashlib.sha256(spelled.redacted.encode()).hexdigest()[:12]
    legacy = user_state_dir() / f"postgresql-127.0.0.1-trades_legacy-{digest}"
    (legacy / "backups").mkdir(parents=True)
    (legacy / "backups" / "kept.json").write_text("{}", encoding="utf-8")
    guard = Guard(db_url=url)
    try:
        assert guard.location.state_dir == spelled.state_dir != legacy
        assert (guard.location.state_dir / "backups" / "kept.json").exists()
        assert not legacy.exists()
    finally:
        guard.close()
