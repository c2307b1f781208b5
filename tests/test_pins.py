"""What an operation needs is pinned against prune from the moment it exists.

A restore or rollback needs the backup it restores and, from the instant its id is
allocated, its safety backup; a prune in another process (``dbguard prune`` from cron,
with ``keep_last = 1``) must take neither, whichever moment it runs at. The pins are
files in the catalog named by pid: a pin of a process that was SIGKILLed holds nothing.
Everything here runs real processes on real SQLite files.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_restore import make_db, rows

from dbguard_plugin import Guard
from dbguard_plugin.catalog import Catalog
from dbguard_plugin.operations.restore import restore, rollback
from dbguard_plugin.settings.config import Config

#: Pins backup argv[2] for a "restore" in its own process, prints READY, waits for a line.
#: argv: config path, backup id
PINNER = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard.from_config(sys.argv[1])
    with guard.catalog.pinning("restore"):
        guard.catalog.pin(sys.argv[2])
        print("READY", flush=True)
        sys.stdin.readline()
"""

#: Restores backup argv[2] and stops right after its safety backup exists (before the
#: journal names it) until a line arrives; then finishes, rolls back, prints OK.
#: argv: config path, backup id
PAUSED_RESTORE = """
    import sys
    from dbguard_plugin import Guard, signals
    from dbguard_plugin.operations.restore import restore, rollback

    held = []

    def hold(guard, manifest, **extra):
        if manifest.reason == "pre-restore" and not held:  # the restore's, not the rollback's
            held.append(manifest.id)
            print("READY", manifest.id, flush=True)
            sys.stdin.readline()

    signals.backup_finished.connect(hold)
    guard = Guard.from_config(sys.argv[1])
    restore(guard, sys.argv[2])
    rollback(guard)
    print("OK", flush=True)
"""

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


def ids(catalog: Path) -> set[str]:
    return {m.id for m in Catalog(catalog).manifests()}


def add_row(path: Path, value: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
    conn.commit()
    conn.close()


def test_a_running_operation_s_pin_holds_and_a_killed_one_s_does_not(
    tmp_path, db_path, db_url, state_dir, make_guard, spawn, run_cli
):
    make_db(db_path)
    config = keep_one(tmp_path, db_url)
    guard = make_guard(Config.load(config))
    older = guard.backup()
    add_row(db_path, "later")
    newest = guard.backup()  # its prune (keep_last = 1) takes the older one...
    assert ids(state_dir / "backups") == {newest.id}
    older = guard.backup()  # ...so pin this one, and make it the older one
    add_row(db_path, "later still")
    pinner = spawn(PINNER, str(config), older.id)
    guard.backup()
    assert older.id in ids(state_dir / "backups")
    pruned = run_cli("prune", "--config", str(config))
    assert pruned.returncode == 0, pruned.stderr
    assert older.id in ids(state_dir / "backups"), "prune took a pinned backup"

    pinner.kill()  # SIGKILL: its pin file stays, and must hold nothing
    assert [p.name for p in (state_dir / "backups").glob(".pin-*")]
    pruned = run_cli("prune", "--config", str(config))
    assert pruned.returncode == 0, pruned.stderr
    assert older.id not in ids(state_dir / "backups")
    assert list((state_dir / "backups").glob(".pin-*")) == []  # swept by the prune


def test_the_safety_backup_is_pinned_before_the_journal_names_it(
    tmp_path, db_path, db_url, state_dir, make_guard, spawn, run_cli
):
    """Between the safety backup and the journal, a newer backup and a prune (keep_last
    = 1) run in other processes: the backup being restored and the safety backup stay,
    the restore finishes and its rollback works."""
    make_db(db_path)
    config = keep_one(tmp_path, db_url)
    backup = make_guard(Config.load(config)).backup()
    add_row(db_path, "before the restore")
    before = rows(db_path)
    child = spawn(PAUSED_RESTORE, str(config), backup.id, ready=None)
    safety = child.expect("READY").split()[1]
    assert not (state_dir / "operation.json").exists()  # not journaled yet

    newer = run_cli("backup", "--config", str(config))
    assert newer.returncode == 0, newer.stderr
    pruned = run_cli("prune", "--config", str(config))
    assert pruned.returncode == 0, pruned.stderr
    assert {backup.id, safety} <= ids(state_dir / "backups")

    child.send()
    child.expect("OK")
    assert child.wait() == 0, child.stderr
    assert rows(db_path) == before  # restored, then rolled back to the safety backup
    assert list((state_dir / "backups").glob(".pin-*")) == []  # released at the end


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


def test_prune_in_a_loop_beside_restores_and_rollbacks(
    tmp_path, db_path, db_url, state_dir, make_guard, spawn
):
    prune_beside_cycles(8, tmp_path, db_path, db_url, state_dir, make_guard, spawn)
