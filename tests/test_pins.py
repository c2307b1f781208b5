"""What an operation needs is pinned against prune from the moment it exists.

A restore or rollback needs the backup it restores and, from the instant its id is
allocated, its safety backup; a prune in another process (``dbguard prune`` from cron,
with ``keep_last = 1``) must take neither, whichever moment it runs at. The pins are
files in the catalog named by pid: a pin of a process that was SIGKILLed holds nothing.
Everything here runs real processes on real SQLite files.
"""

from __future__ import annotations

from pathlib import Path

from prune_cycles import add_row, keep_one
from sqlite_files import make_db, rows

from dbguard_plugin.catalog import Catalog
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


def ids(catalog: Path) -> set[str]:
    return {m.id for m in Catalog(catalog).manifests()}


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


def test_prune_in_a_loop_beside_restores_and_rollbacks(prune_beside_cycles):
    prune_beside_cycles(8)
