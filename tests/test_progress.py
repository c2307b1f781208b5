"""Progress on a terminal: a bar once the work passes the delay (a second by default),
also when the step that takes the time reports nothing (a compression or a check after a
quick copy); ``verify --all`` and the compression of a backup report their progress."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines.sqlite.backup import BackupSettings, create_backup
from dbguard_plugin.location import locate
from dbguard_plugin.progress import DELAY_ENV, LazyBar


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def test_the_bar_appears_when_the_delay_is_up_without_another_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv(DELAY_ENV, "0.05")
    try:
        with LazyBar("compressing") as bar:
            bar(5, 10)  # the quick part; then a long one that reports nothing
            deadline = time.monotonic() + 30
            while bar._bar is None:
                assert time.monotonic() < deadline, "no bar appeared"
                time.sleep(0.01)
    finally:
        terminal.close()
    shown = _read_all(master)
    os.close(master)
    assert "compressing" in shown


def test_a_compressed_backup_reports_the_compression_too(db_path: Path, db_url: str,
                                                         tmp_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (b BLOB)")
    conn.executemany("INSERT INTO t VALUES (randomblob(4096))", [()] * 2000)
    conn.commit()
    conn.close()
    steps: list[tuple[int, int]] = []
    manifest = create_backup(locate(db_url), Catalog(tmp_path / "catalog"), "manual",
                             settings=BackupSettings(compression="gzip"),
                             progress=lambda done, total: steps.append((done, total)))
    totals = list(dict.fromkeys(total for _, total in steps))
    assert totals == [manifest.page_count, manifest.raw_size], "copy, then compression"
    assert steps[-1] == (manifest.raw_size, manifest.raw_size)


def test_verify_all_shows_a_bar_on_a_terminal(db_path: Path, db_url: str,
                                              child_env, make_guard) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    guard = make_guard()
    for _ in range(3):
        guard.backup()
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dbguard_plugin", "verify", "--all", "--db", db_url],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, text=True,
            env=child_env(**{DELAY_ENV: "0"}), timeout=120, check=False,
        )
    finally:
        os.close(slave)
    shown = _read_all(master)
    os.close(master)
    assert done.returncode == 0, done.stdout + shown
    assert "3 ok, 0 bad" in done.stdout
    assert "verifying" in shown
