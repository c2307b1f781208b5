"""Injected faults: each gives a clear error naming the file and leaves the live database
byte-identical (sha256 of the file before and after).

How each is made, honestly:

- disk full: a real tmpfs mounted for the test (root only; skipped where mounting is not
  permitted). A 3 MiB one is too small for a backup (dbguard's free-space check refuses
  before writing); on a 64 MiB one "another program" takes every free byte between two
  steps of a backup copy, and just as a restore starts writing, so the kernel itself
  answers ENOSPC in the middle of the write;
- file size limit: ``RLIMIT_FSIZE`` in the child process (SIGXFSZ ignored, so writes fail
  with EFBIG), which stands in for a quota;
- permission denied: a catalog of mode 0500, the command run as root WITHOUT the
  capabilities that bypass file modes (``setpriv``; root normally ignores modes, so a
  ``chmod`` alone would prove nothing);
- read-only catalog: a read-only bind mount over the catalog (root only; EROFS);
- unreadable backup: the backup file made mode 000, read the same way. This is
  EACCES on open, not EIO: a real EIO needs a failing device (dm-error), which a test
  cannot make without privileges this suite does not assume;
- the backup file deleted during a restore, just as the restore starts writing. The
  restore then puts its safety backup back, so here the content is identical and the
  file's bytes may differ in SQLite's change counter; the same holds after a disk that
  fills during a restore, where the check is byte-identity after recovery.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_runs import Cli
from crash_cases import leftovers
from faults import fill as _fill
from faults import mounted, small_disk, without_dac
from harness import Tally, change, check_database, make_db
from sqlite_files import content_digest, file_sha

from dbguard_plugin import Guard
from dbguard_plugin.catalog.repository import Repository, read_index
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.engines.sqlite.backup import BackupError
from dbguard_plugin.settings.config import Config


def _mark(tally: Tally, fault: str) -> None:
    tally.faults.add(fault)


#: Where the CLI runs in these tests: a directory any process may enter, also one that runs
#: without the capabilities that bypass file modes.
ANYWHERE = Path("/")


def test_a_disk_too_small_for_a_backup_is_refused_before_writing(
    scratch_dir: Path, run_cli: Cli, tally: Tally
) -> None:
    small = scratch_dir / "small"
    with small_disk(small, "3m"):
        db = small / "tradesv3.sqlite"
        make_db(db, bulk=300)  # about 1.3 MiB: the database fits, a copy of it does not
        before = file_sha(db)
        result = run_cli("backup", "--db", f"sqlite:///{db}", cwd=ANYWHERE, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"not enough free space for a backup of {db}" in result.stderr, result.stderr
        assert file_sha(db) == before
        assert leftovers(small / "tradesv3.sqlite.dbguard" / "backups") == []
        _mark(tally, "disk too small for a backup (3 MiB tmpfs)")


def test_the_disk_fills_during_a_backup_copy(
    scratch_dir: Path, tally: Tally
) -> None:
    """The free-space check passes, then the disk fills between two steps of the copy: the
    kernel's own ENOSPC, met by SQLite in the middle of writing the copy."""
    disk = scratch_dir / "small"
    with small_disk(disk, "64m"):
        db = disk / "tradesv3.sqlite"
        make_db(db, bulk=2500)  # about 10 MiB: the copy takes three steps
        before = file_sha(db)
        guard = Guard(Config(db_url=f"sqlite:///{db}", backup_method="backup-api"))
        try:
            with pytest.raises(BackupError) as failed:
                guard.backup(progress=lambda done, total: _fill(disk))
        finally:
            guard.close()
        assert f"{db}: backup failed: database or disk is full" in str(failed.value)
        (disk / "filler").unlink()
        assert file_sha(db) == before
        catalog = disk / "tradesv3.sqlite.dbguard" / "backups"
        assert leftovers(catalog) == []
        assert [n for n in os.listdir(catalog) if not n.startswith(".")] == []
        _mark(tally, "disk full (ENOSPC) during a backup copy")


def test_the_disk_fills_while_the_repository_writes_a_pack(
    scratch_dir: Path, tally: Tally
) -> None:
    """The copy is complete when the disk fills, so the kernel's ENOSPC meets the
    repository's pack write: the backup fails naming the pack, leaves no manifest and
    no scratch file, the backup before it still verifies and restores, and once space is
    freed the next backup and prune work and leave no unreferenced pack."""
    disk = scratch_dir / "small"
    with small_disk(disk, "64m"):
        db = disk / "tradesv3.sqlite"
        make_db(db, bulk=2500)  # about 10 MiB: a new pack of several MiB
        config = Config(db_url=f"sqlite:///{db}", storage="repository", keep_last=1,
                        keep_daily=0, keep_weekly=0)
        guard = Guard(config)
        try:
            first = guard.backup()
            change(db)  # every row's value changes: the next pack is MiBs
            before = file_sha(db)

            def fill_when_copied(done: int, total: int) -> None:
                if done == total:  # the copy is whole; the chunks are written next
                    _fill(disk)

            with pytest.raises(BackupError) as failed:
                guard.backup(progress=fill_when_copied)
            message = str(failed.value)
            assert message.startswith(f"{db}: backup failed: {disk}/"), message
            assert ".pack: No space left on device" in message
            assert "set backup_dir to a larger disk" in message
            assert file_sha(db) == before
            catalog = disk / "tradesv3.sqlite.dbguard" / "backups"
            assert [m.id for m in guard.catalog.manifests()] == [first.id]
            assert leftovers(catalog) == []
            packs = catalog / "repository" / "packs"
            assert [p.name for p in packs.rglob(".tmp-*")] == []
            (disk / "filler").unlink()
            assert verify_backup(guard.catalog, first).ok
            second = guard.backup()
            guard.prune()
            assert [m.id for m in guard.catalog.manifests()] == [second.id]
            assert verify_backup(guard.catalog, second).ok
            referenced = Repository.of(catalog).referenced_by([second.chunk_list])
            # No pack is left that no backup needs (dead chunks in a mostly live pack
            # stay until it is repacked, by design).
            assert all(set(read_index(idx)) & referenced for idx in packs.rglob("*.idx"))
        finally:
            guard.close()
        _mark(tally, "disk full (ENOSPC) while the repository writes a pack")


def test_a_full_disk_under_verify_and_restore_is_no_room_not_damage(
    scratch_dir: Path, run_cli: Cli, tally: Tally
) -> None:
    """A compressed or repository backup is read into a scratch copy before it is
    checked. With no room for that copy, verify and restore exit 1 saying so: the
    backups are fine, so they are neither reported damaged (exit 4) nor marked
    unverified, and once space is freed they verify."""
    disk = scratch_dir / "small"
    with small_disk(disk, "64m"):
        db = disk / "tradesv3.sqlite"
        make_db(db, bulk=2500)
        made = []
        for storage in ({"storage": "repository"}, {"compression": "gzip"}):
            config = disk / f"bot-{len(made)}.json"
            config.write_text(json.dumps({"dbguard": {"db_url": f"sqlite:///{db}",
                                                      **storage}}))
            done = run_cli("backup", "--config", str(config), "--json", cwd=ANYWHERE)
            assert done.returncode == 0, done.stderr
            made.append((json.loads(done.stdout)["id"], config))
        change(db)
        before = file_sha(db)
        catalog = disk / "tradesv3.sqlite.dbguard" / "backups"
        _fill(disk)
        for backup_id, config in made:
            for command in (["verify", backup_id, "--json"],
                            ["restore", backup_id, "--yes", "--json"]):
                result = run_cli(*command, "--config", str(config), cwd=ANYWHERE)
                assert result.returncode == 1, (command, result.stdout, result.stderr)
                error = json.loads(result.stdout)["error"]
                assert error.startswith(f"{catalog}: no room to read backup {backup_id}")
                assert "No space left on device" in error
                assert "free space" in error
            manifest = json.loads((catalog / f"{backup_id}.json").read_text())
            assert manifest["verified"] is True
        assert leftovers(catalog) == []
        (disk / "filler").unlink()
        assert file_sha(db) == before  # (it checkpoints first, which needs room)
        checked = run_cli("verify", "--all", "--config", str(made[0][1]), cwd=ANYWHERE)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "2 ok, 0 bad" in checked.stdout
        _mark(tally, "disk full (ENOSPC) under verify's and restore's scratch copy")


#: The CLI's restore, with the disk filled by "another program" the moment the restore
#: starts writing (restore-started fires after the verification, the free-space check
#: and the safety backup). argv: the directory to fill, then the CLI's arguments.
FILL_ON_RESTORE = """
    import contextlib, os, shutil, sys
    from dbguard_plugin import signals
    from dbguard_plugin.cli import main

    where = sys.argv[1]

    def fill(sender, **extra):
        free = shutil.disk_usage(where).free
        with open(os.path.join(where, "filler"), "wb") as fh, contextlib.suppress(OSError):
            fh.write(bytes(free))

    signals.restore_started.connect(fill)
    sys.argv = ["dbguard", *sys.argv[2:]]
    main()
"""


def _restore_onto_a_disk_that_fills(
    scratch_dir: Path, child_env: Callable[..., dict[str, str]]
) -> tuple[Path, str, str, subprocess.CompletedProcess[str]]:
    disk = scratch_dir / "small"
    db = disk / "tradesv3.sqlite"
    make_db(db, bulk=2500)  # about 10 MiB: the copy into the live database takes steps
    guard = Guard(Config(db_url=f"sqlite:///{db}"))
    try:
        manifest = guard.backup()
    finally:
        guard.close()
    change(db)
    before = file_sha(db)
    script = scratch_dir / "fill_on_restore.py"
    script.write_text(textwrap.dedent(FILL_ON_RESTORE))
    result = subprocess.run(
        [sys.executable, str(script), str(disk), "restore", manifest.id,
         "--db", f"sqlite:///{db}", "--yes"],
        capture_output=True, text=True, env=child_env(), timeout=120, check=False,
        stdin=subprocess.DEVNULL)
    return db, before, manifest.id, result


def test_the_disk_fills_during_a_restore_copy(
    scratch_dir: Path, child_env: Callable[..., dict[str, str]],
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tally: Tally,
) -> None:
    """The restore fails, the copy never committed, and once space is freed the next
    command undoes it: the database is byte-identical to before."""
    disk = scratch_dir / "small"
    with small_disk(disk, "64m"):
        db, before, backup_id, result = _restore_onto_a_disk_that_fills(
            scratch_dir, child_env)
        assert result.returncode == 1, result.stdout + result.stderr
        (disk / "filler").unlink()
        recovered = run_cli("status", "--db", f"sqlite:///{db}")
        assert recovered.returncode == 0, recovered.stderr
        assert f"recovered: undid the interrupted restore of backup {backup_id}" \
            in recovered.stderr
        check_database(tally, db)
        assert file_sha(db) == before
        assert leftovers(disk / "tradesv3.sqlite.dbguard") == []
        _mark(tally, "disk full (ENOSPC) during a restore copy")


def test_a_restore_onto_a_full_disk_says_so_clearly(
    scratch_dir: Path, child_env: Callable[..., dict[str, str]]
) -> None:
    disk = scratch_dir / "small"
    with small_disk(disk, "64m"):
        db, _before, _id, result = _restore_onto_a_disk_that_fills(scratch_dir, child_env)
        (disk / "filler").unlink()
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert str(db) in result.stderr


def test_a_file_size_limit_during_a_backup(
    db_path: Path, db_url: str, run_cli: Cli, state_dir: Path,
    tally: Tally,
) -> None:
    make_db(db_path, bulk=300)
    before = file_sha(db_path)
    result = run_cli("backup", "--db", db_url, fsize=256 << 10, cwd=ANYWHERE,
                     timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert str(db_path) in result.stderr
    assert "backup failed" in result.stderr
    assert "File too large" in result.stderr
    assert file_sha(db_path) == before
    assert leftovers(state_dir / "backups") == []
    _mark(tally, "file size limit (RLIMIT_FSIZE, EFBIG) during backup")


def test_permission_denied_on_the_catalog(
    db_path: Path, db_url: str, state_dir: Path, make_guard: Callable[..., object],
    run_cli: Cli, tally: Tally,
) -> None:
    make_db(db_path)
    make_guard(Config(db_url=db_url)).backup()  # type: ignore[attr-defined]
    catalog = state_dir / "backups"
    catalog.chmod(0o500)
    before = file_sha(db_path)
    try:
        result = run_cli("backup", "--db", db_url, wrap=without_dac, cwd=ANYWHERE,
                         timeout=120)
    finally:
        catalog.chmod(0o700)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "ermission denied" in result.stderr, result.stderr
    assert str(catalog) in result.stderr, result.stderr
    assert file_sha(db_path) == before
    _mark(tally, "permission denied on the catalog (EACCES, root without DAC override)")


def test_a_read_only_catalog(
    db_path: Path, db_url: str, state_dir: Path, make_guard: Callable[..., object],
    run_cli: Callable[..., subprocess.CompletedProcess[str]], tally: Tally,
) -> None:
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url))
    manifest = guard.backup()  # type: ignore[attr-defined]
    change(db_path)
    catalog = state_dir / "backups"
    with mounted(catalog, "--bind", "-o", "ro", str(catalog)):
        probe = subprocess.run(["touch", str(catalog / "probe")], capture_output=True,
                               check=False)
        if probe.returncode == 0:
            os.remove(catalog / "probe")
            pytest.skip("this kernel ignored the read-only bind mount")
        before = file_sha(db_path)
        for args in (["backup", "--db", db_url],
                     ["restore", manifest.id, "--db", db_url, "--yes"]):
            result = run_cli(*args)
            assert result.returncode != 0, (args, result.stdout)
            assert "Traceback" not in result.stderr, result.stderr
            assert "Read-only file system" in result.stderr, result.stderr
            assert str(catalog) in result.stderr
            assert file_sha(db_path) == before
    _mark(tally, "read-only catalog (EROFS bind mount)")


def test_an_unreadable_backup(
    db_path: Path, db_url: str, state_dir: Path, make_guard: Callable[..., object],
    run_cli: Cli, tally: Tally,
) -> None:
    make_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()  # type: ignore[attr-defined]
    data = state_dir / "backups" / manifest.file
    data.chmod(0)
    change(db_path)
    before = file_sha(db_path)
    result = run_cli("restore", manifest.id, "--db", db_url, "--yes", wrap=without_dac,
                     cwd=ANYWHERE, timeout=120)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert str(data) in result.stderr, result.stderr
    assert "ermission denied" in result.stderr, result.stderr
    assert file_sha(db_path) == before
    _mark(tally, "unreadable backup (EACCES on open, standing in for EIO)")


#: A restore whose backup file is deleted the moment it starts writing (restore-started
#: fires after the verification and the safety backup, just before the copy opens it).
DELETED_DURING_RESTORE = """
    import os, sys
    from dbguard_plugin import Guard, signals
    from dbguard_plugin.operations.restore import restore

    guard = Guard(db_url=sys.argv[1])
    manifest = guard.catalog.get(sys.argv[2])

    def delete(sender, backup_id, **extra):
        os.remove(guard.catalog.data_path(manifest))

    signals.restore_started.connect(delete)
    try:
        restore(guard, manifest.id)
    except Exception as exc:
        print("FAILED", type(exc).__name__, exc, flush=True)
    else:
        print("RESTORED", flush=True)
    guard.close()
"""


def test_the_backup_file_deleted_during_a_restore(
    db_path: Path, db_url: str, state_dir: Path, make_guard: Callable[..., object],
    spawn: Callable[..., object], tally: Tally,
) -> None:
    make_db(db_path, bulk=300)
    manifest = make_guard(Config(db_url=db_url)).backup()  # type: ignore[attr-defined]
    change(db_path)
    content = content_digest(db_path)
    child = spawn(DELETED_DURING_RESTORE, db_url, manifest.id, ready=None)
    line = child.expect("")  # type: ignore[attr-defined]
    while not line.startswith(("FAILED", "RESTORED")):
        line = child.expect("")  # type: ignore[attr-defined]
    assert line.startswith("FAILED RestoreError"), line
    assert f"restore of {manifest.id} failed" in line
    assert "put back from safety backup" in line
    check_database(tally, db_path)
    # The copy never started, so the content is exactly as before; the file itself was
    # rewritten from the safety backup, so its bytes (the change counter) may differ.
    assert content_digest(db_path) == content
    assert leftovers(state_dir) == []
    assert stat.S_ISREG(os.stat(db_path).st_mode)
    _mark(tally, "backup file deleted during a restore")


def test_a_failed_snapshot_copy_reports_one_clear_line(
    db_path: Path, db_url: str, run_cli: Cli
) -> None:
    make_db(db_path, bulk=300)
    result = run_cli("backup", "--db", db_url, fsize=256 << 10, cwd=ANYWHERE,
                     timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
