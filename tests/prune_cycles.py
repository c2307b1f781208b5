"""``dbguard prune`` in a loop in another process beside restore and rollback cycles in
this one: shared by tests/test_pins.py and the torture suite
(torture/test_prune_stress.py), which hand it out through the ``prune_beside_cycles``
fixture (conftest.py). A support module, not a test module: no test module imports
another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlite_files import make_db, rows

from dbguard_plugin import Guard
from dbguard_plugin.operations.restore import restore, rollback
from dbguard_plugin.settings.config import Config

#: ``dbguard prune`` in a loop until argv[2] exists; after each prune, under the catalog
#: lock (so no prune runs meanwhile), checks that last-replacement.json names a backup
#: whose files exist. Prints READY first and "DONE <prunes> <missing>" last.
#: argv: config path, stop file
PRUNE_LOOP = """
    import json, os, sys
    from dbguard_plugin import Guard

    guard = Guard.from_config(sys.argv[1])
    last = guard.location.state_dir / "last-replacement.json"
    prunes = missing = 0
    print("READY", flush=True)
    while not os.path.exists(sys.argv[2]):
        guard.prune()
        prunes += 1
        with guard.catalog.locked():
            try:
                safety = json.loads(last.read_text())["safety_id"]
            except (FileNotFoundError, ValueError):
                continue
            manifest = guard.catalog.directory / f"{safety}.json"
            if not manifest.exists() or not guard.catalog.data_path(
                    guard.catalog.get(safety)).exists():
                missing += 1
                print("MISSING", safety, flush=True)
    guard.close()
    print("DONE", prunes, missing, flush=True)
"""


def keep_one(tmp_path: Path, db_url: str) -> Path:
    """A bot config whose retention keeps one backup (the newest) and nothing by age."""
    config = tmp_path / "bot.json"
    config.write_text(json.dumps({"db_url": db_url, "dbguard": {
        "keep_last": 1, "keep_daily": 0, "keep_weekly": 0}}))
    return config


def add_row(path: Path, value: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
    conn.commit()
    conn.close()


def prune_beside_cycles(cycles: int, tmp_path: Path, db_path: Path, db_url: str,
                        state_dir: Path, make_guard: Callable[..., Guard],
                        spawn: Callable[..., Any]) -> None:
    """*cycles* restore-then-rollback cycles in this process while another process
    prunes in a loop with keep_last = 1: every restore and rollback succeeds, and
    last-replacement.json always names a backup whose files exist."""
    make_db(db_path)
    config = keep_one(tmp_path, db_url)
    guard = make_guard(Config.load(config))
    stop = tmp_path / "stop"
    pruner = spawn(PRUNE_LOOP, str(config), str(stop))
    last = state_dir / "last-replacement.json"
    for cycle in range(cycles):
        backup = guard.backup()
        add_row(db_path, f"cycle {cycle}")
        before = rows(db_path)
        done = restore(guard, backup.id)
        assert (state_dir / "backups" / f"{done.safety_id}.json").exists()
        assert json.loads(last.read_text())["safety_id"] == done.safety_id
        rolled = rollback(guard)
        assert rows(db_path) == before, f"cycle {cycle}: the rollback lost rows"
        named = json.loads(last.read_text())["safety_id"]
        assert named == rolled.safety_id
        assert (state_dir / "backups" / f"{named}.json").exists()
    stop.touch()
    line = pruner.expect("DONE")
    assert pruner.wait() == 0, pruner.stderr
    _done, prunes, missing = line.split()
    assert int(missing) == 0, pruner.output
    assert int(prunes) > cycles, "the pruner hardly ran beside the cycles"
