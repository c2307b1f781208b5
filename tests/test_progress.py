"""Progress on a terminal: a bar once the work passes the delay (a second by default),
also when the step that takes the time reports nothing (a compression or a check after a
quick copy); ``verify --all`` and the compression of a backup report their progress."""

from __future__ import annotations

import os
import pty
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.engines.sqlite.backup import BackupSettings, create_backup
from dbguard_plugin.location import locate
from dbguard_plugin.progress import DELAY_ENV, LazyBar


def test_the_bar_appears_when_the_delay_is_up_without_another_step(
    monkeypatch: pytest.MonkeyPatch, read_terminal: Callable[[int], str],
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
    shown = read_terminal(master)
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
                                              child_env, make_guard, run_cli,
                                              read_terminal) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    guard = make_guard()
    for _ in range(3):
        guard.backup()
    master, slave = pty.openpty()
    try:
        done = run_cli("verify", "--all", "--db", db_url, stderr=slave,
                       env=child_env(**{DELAY_ENV: "0"}), timeout=120)
    finally:
        os.close(slave)
    shown = read_terminal(master)
    os.close(master)
    assert done.returncode == 0, done.stdout + shown
    assert "3 ok, 0 bad" in done.stdout
    assert "verifying" in shown
