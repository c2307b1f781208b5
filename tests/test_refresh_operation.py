"""A bot in another process learns from its own tick() which operation replaced its
database, and its refresh hook is told that operation (not always RESTORE)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from dbguard_plugin import signals


def _config(tmp_path: Path, db_url: str) -> Path:
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"db_url": db_url, "dbguard": {
        "environment": "development", "backup_on_session_start": False,
        "backup_on_session_end": False}}))
    return config


def test_a_move_by_another_process_reaches_the_bot_as_a_move(
    tmp_path: Path, db_path: Path, db_url: str, spawn: Any, run_cli: Any,
    scripts: dict[str, str],
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    conn.close()
    config = _config(tmp_path, db_url)
    bot = spawn(scripts["ticking_bot"], str(config), str(db_path))
    bot.send("TICK")
    bot.expect("TICKED")

    (tmp_path / "elsewhere").mkdir()
    moved = run_cli("move", str(tmp_path / "elsewhere" / "bot.sqlite"), "--config",
                    str(config), "--yes")
    assert moved.returncode == 0, moved.stderr

    bot.send("TICK")
    assert bot.expect("REFRESHED") == "REFRESHED move 0"
    bot.expect("TICKED")
    bot.send("")
    assert bot.wait() == 0, bot.stderr


def test_tick_announces_a_restore_by_another_process_as_the_replacing_one_did(
    tmp_path: Path, db_path: Path, db_url: str, run_cli: Any, make_guard: Any,
    received: Any,
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    conn.close()
    config = _config(tmp_path, db_url)
    backup = run_cli("backup", "--config", str(config), "--json")
    assert backup.returncode == 0, backup.stderr
    backup_id = backup.json["id"]
    bot = make_guard()
    replaced = received(signals.database_replaced)
    bot.tick()
    assert replaced == []

    restored = run_cli("restore", backup_id, "--config", str(config), "--yes", "--json")
    assert restored.returncode == 0, restored.stderr
    bot.tick()
    bot.tick()  # once per replacement
    assert replaced == [(bot, {"operation": "restore", "backup_id": backup_id,
                               "safety_id": restored.json["safety_id"], "elsewhere": True})]
