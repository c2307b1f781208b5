"""How often ``dbguard restore ID --yes`` reads and decompresses a gzip backup.

The process under test is the real CLI; only the file-open and decompression functions
it calls are wrapped, to count the calls on the backup's data file. The docs promise
two verifications of the stored file (the preview's before the question, and step 3's
under the lease; docs/restore.rst), each a full read that hashes it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_files import content_digest

from dbguard_plugin.core.guard import Guard
from dbguard_plugin.settings.config import Config

#: Runs the CLI with sys.argv[3:], counting opens for reading and gzip decompressions of
#: the file sys.argv[1]; the counts go to sys.argv[2] as JSON.
COUNTING_CLI = r'''
import builtins, gzip, json, os, sys

backup, report = os.path.realpath(sys.argv[1]), sys.argv[2]
counts = {"opened": 0, "decompressed": 0}
real_open, real_os_open, real_gzip_init = builtins.open, os.open, gzip.GzipFile.__init__


def is_backup(file):
    return isinstance(file, (str, bytes, os.PathLike)) and \
        os.path.realpath(os.fsdecode(file)) == backup


def counting_open(file, mode="r", *args, **kwargs):
    if is_backup(file) and not set(mode) & set("wax+"):
        counts["opened"] += 1
    return real_open(file, mode, *args, **kwargs)


def counting_os_open(path, flags, *args, **kwargs):
    if is_backup(path) and not flags & (os.O_WRONLY | os.O_RDWR):
        counts["opened"] += 1
    return real_os_open(path, flags, *args, **kwargs)


def counting_gzip_init(self, filename=None, mode=None, compresslevel=9, fileobj=None,
                       mtime=None):
    reading = not set(mode or getattr(fileobj, "mode", "rb")) & set("wax")
    if reading and is_backup(filename if filename is not None else
                             getattr(fileobj, "name", None)):
        counts["decompressed"] += 1
    real_gzip_init(self, filename, mode, compresslevel, fileobj, mtime)


builtins.open, os.open, gzip.GzipFile.__init__ = counting_open, counting_os_open, \
    counting_gzip_init
sys.argv = ["dbguard", *sys.argv[3:]]
from dbguard_plugin.cli import main

try:
    main()
finally:
    with real_open(report, "w") as out:
        json.dump(counts, out)
'''

Counts = dict[str, int]


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row-{i}" * 20) for i in range(500)])
    conn.commit()
    conn.close()


@pytest.fixture
def restore_counted(tmp_path: Path, db_path: Path, db_url: str,
                    child_env: Callable[..., dict[str, str]]) -> Callable[[], Counts]:
    """A gzip backup of a database that moved on since; the callable restores it with
    ``dbguard restore ID --yes`` and returns the counts."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dbguard": {"db_url": db_url, "compression": "gzip",
                                              "environment": "development"}}))
    make_db(db_path)
    guard = Guard(Config.load(config))
    try:
        manifest = guard.backup()
        stored = guard.catalog.data_path(manifest)
    finally:
        guard.close()
    assert manifest.compression == "gzip"
    backup_digest = content_digest(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("DELETE FROM t WHERE id % 3 = 0")
    conn.commit()
    conn.close()

    def run() -> Counts:
        report = tmp_path / "counts.json"
        result = subprocess.run(
            [sys.executable, "-c", COUNTING_CLI, str(stored), str(report), "restore",
             manifest.id, "--yes", "--config", str(config)],
            env=child_env(), capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"\nrestored {manifest.id} in " in result.stdout, result.stdout
        assert content_digest(db_path) == backup_digest
        counts: Counts = json.loads(report.read_text())
        return counts

    return run


def test_the_restore_reads_the_backup_boundedly(restore_counted: Callable[[], Counts]) -> None:
    """Today: each verification reads the file to hash it and again to decompress it
    for its content check, and each preview decompresses it once more."""
    counts = restore_counted()
    assert counts["opened"] <= 6
    assert counts["decompressed"] <= 4
    assert counts["decompressed"] >= 2  # the counting itself works: one per verification


@pytest.mark.xfail(strict=True, reason="needs an engines verification of an already "
                   "decompressed copy (engines/sqlite/verify.content_problems takes the "
                   "stored file only); see the refactor's report for issue #14")
def test_the_restore_reads_the_backup_once_per_promised_verification(
    restore_counted: Callable[[], Counts],
) -> None:
    counts = restore_counted()
    assert counts["opened"] <= 2
    assert counts["decompressed"] <= 2
