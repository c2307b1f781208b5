"""How often ``dbguard restore ID --yes`` reads and decompresses a gzip backup.

The process under test is the real CLI; only the file-open and decompression functions
it calls are wrapped, to count the calls on the backup's data file, and the SQLite
engine's comparison is counted by a profile hook. The docs promise two verifications of
the stored file (the preview's before the question, and step 3's under the lease;
docs/restore.rst), each one read that hashes and decompresses it in the same pass.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_files import content_digest

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.codecs import file_digest
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.engines import create_backup, verified_copy, verify_backup
from dbguard_plugin.engines.backup import BackupSettings
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config

#: Runs the CLI with sys.argv[3:], counting opens for reading and gzip decompressions of
#: the file sys.argv[1], and the previews computed (calls of the SQLite engine's compute);
#: the counts go to sys.argv[2] as JSON.
COUNTING_CLI = r'''
import builtins, gzip, json, os, sys

backup, report = os.path.realpath(sys.argv[1]), sys.argv[2]
counts = {"opened": 0, "decompressed": 0, "previewed": 0}
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
from dbguard_plugin.engines.sqlite.preview import compute

comparing = compute.__code__


def counting_calls(frame, event, arg):
    if event == "call" and frame.f_code is comparing:
        counts["previewed"] += 1


sys.setprofile(counting_calls)

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


def test_the_restore_reads_the_backup_once_per_promised_verification(
    restore_counted: Callable[[], Counts],
) -> None:
    """Each verification reads the stored file once, hashing it as it decompresses it
    into the scratch copy that it checks; the preview before the question compares that
    copy, and so does the restore's own under the lease, which then writes from it.
    (Before: 6 reads and 4 decompressions, a verification hashed the file and then
    decompressed it again, and each comparison decompressed it once more.)"""
    counts = restore_counted()
    assert counts == {"opened": 2, "decompressed": 2, "previewed": 2}


# -- one read, the same messages --------------------------------------------------------


@pytest.fixture
def gzip_backup(tmp_path: Path, db_path: Path) -> tuple[Catalog, Manifest]:
    make_db(db_path)
    catalog = Catalog(tmp_path / "catalog")
    manifest = create_backup(locate(f"sqlite:///{db_path}"), catalog, "manual",
                             settings=BackupSettings(compression="gzip"))
    return catalog, manifest


def stored_as(catalog: Catalog, manifest: Manifest, data: bytes) -> Manifest:
    """*manifest* with *data* as its stored file, and its size and sha256 to match."""
    catalog.data_path(manifest).write_bytes(data)
    return dataclasses.replace(manifest, size=len(data),
                               sha256=hashlib.sha256(data).hexdigest())


def test_a_changed_file_is_reported_by_its_sha256_even_when_it_fails_to_decompress(
    gzip_backup: tuple[Catalog, Manifest],
) -> None:
    """The one pass hashes what the decompressor left unread: a truncated stream, whose
    decompression fails, is still reported as a changed file (and only as that)."""
    catalog, manifest = gzip_backup
    stored = catalog.data_path(manifest)
    stored.write_bytes(stored.read_bytes()[: manifest.size // 2])

    result = verify_backup(catalog, manifest, "quick_check")
    assert result.problems == (
        f"{stored}: sha256 {file_digest(stored)[1][:16]}... (size {manifest.size // 2}) "
        f"does not match the manifest's {manifest.sha256[:16]}... (size {manifest.size}): "
        "the file was changed or damaged",
    )


def test_a_stream_that_matches_its_sha256_but_does_not_decompress_says_so(
    gzip_backup: tuple[Catalog, Manifest],
) -> None:
    catalog, manifest = gzip_backup
    stored = catalog.data_path(manifest)
    garbled = stored_as(catalog, manifest, b"\x1f\x8b" + b"not a gzip stream" * 100)

    (problem,) = verify_backup(catalog, garbled, "quick_check").problems
    assert problem.startswith(f"{stored}: {stored}: cannot decompress (")


def test_other_content_under_the_right_sha256_is_caught_by_the_raw_sha256(
    gzip_backup: tuple[Catalog, Manifest], tmp_path: Path,
) -> None:
    """The raw sha256 is taken from the same pass, of the bytes written to the copy."""
    catalog, manifest = gzip_backup
    stored = catalog.data_path(manifest)
    with verified_copy(catalog, manifest, "quick_check") as plain:
        assert plain != stored
        assert plain.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not plain.exists(), "the scratch copy outlives its block"
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY)")
    conn.close()
    replaced = stored_as(catalog, manifest, gzip.compress(other.read_bytes()))

    assert verify_backup(catalog, replaced, "quick_check").problems == (
        f"{stored}: decompressed content does not match the manifest",
        f"{stored}: schema differs from the manifest's fingerprint",
    )
