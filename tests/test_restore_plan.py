"""operations/restore_plan: a restore by id decided before the operator is asked: which
catalog holds the backup, and a --from-profile restore with one Guard and one reading
of the profiles file for the lookup."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dbguard_plugin.core.guard import Guard
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.operations.profile_store import ProfileStore
from dbguard_plugin.operations.restore_plan import plan_restore
from dbguard_plugin.settings.config import resolve
from dbguard_plugin.settings.profile_file import ProfileFile


def _make_db(path: Path, value: int) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (?)", (value,))


def _value(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT x FROM t").fetchone()[0])


@pytest.fixture
def profiles(tmp_path: Path) -> dict[str, Any]:
    """A bot config on a production database, a development profile with its own
    database and a backup of it, and production active."""
    prod, dev = tmp_path / "tradesv3.sqlite", tmp_path / "dev.sqlite"
    _make_db(prod, 1)
    _make_db(dev, 2)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"db_url": f"sqlite:///{prod}"}), encoding="utf-8")
    store = ProfileStore.locate(config)
    store.update("development", db_url=f"sqlite:///{dev}")
    store.switch("production")
    guard = Guard(resolve(config, None, "development"))
    try:
        backup_id = guard.backup("manual").id
    finally:
        guard.close()
    return {"config": config, "prod": prod, "backup_id": backup_id}


def _counting(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[object]:
    calls: list[object] = []
    original: Callable[..., Any] = getattr(cls, name)

    def counted(self: object, *args: Any, **kwargs: Any) -> Any:
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_a_from_profile_restore_builds_one_guard_and_reads_the_profiles_once(
    profiles, run_cli, monkeypatch
) -> None:
    guards = _counting(monkeypatch, Guard, "__init__")
    reads = _counting(monkeypatch, ProfileFile, "read")
    done = run_cli("restore", profiles["backup_id"], "--yes", "--force", "--from-profile",
                   "development", "--config", str(profiles["config"]), "--json",
                   in_process=True)
    assert done.exit_code == 0, done.output
    assert _value(profiles["prod"]) == 2
    assert len(guards) == 1
    # one reading for the guard's own settings (the active profile), one for the lookup
    assert len(reads) == 2


def test_the_lookup_reads_the_profiles_file_once(profiles, monkeypatch) -> None:
    guard = Guard(resolve(profiles["config"]))
    try:
        reads = _counting(monkeypatch, ProfileFile, "read")
        plan = plan_restore(guard, profiles["backup_id"], force=True,
                            profiles=ProfileFile.locate(profiles["config"]),
                            from_profile="development")
        assert len(reads) == 1
        assert plan.from_environment == "development"
        assert plan.manifest.profile == "development"
        assert guard.catalog.manifest_path(profiles["backup_id"]).exists()
    finally:
        guard.close()


def test_a_backup_of_another_profile_names_the_options_it_needs(profiles) -> None:
    guard = Guard(resolve(profiles["config"]))
    try:
        with pytest.raises(ConfigError, match="--from-profile development and --force"):
            plan_restore(guard, profiles["backup_id"],
                         profiles=ProfileFile.locate(profiles["config"]))
    finally:
        guard.close()
