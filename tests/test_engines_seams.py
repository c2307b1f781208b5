"""The engines' seams: one place chooses an engine, SQLite never loads the server engine,
one codec table, and one refusal of a backup that fails verification."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dbguard_plugin.catalog import Catalog, data_file, expected_file
from dbguard_plugin.catalog.codecs import (
    COMPRESSIONS,
    SUFFIXES,
    compressing,
    decompressing,
    file_digest,
)
from dbguard_plugin.engines import (
    create_backup,
    is_server,
    preview_restore,
    verify_backup,
    verify_or_refuse,
)
from dbguard_plugin.engines.backup import BackupSettings
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.location import locate


def _make_db(path: Path, open_orders: int = 2) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, ft_is_open INTEGER)")
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, is_open INTEGER)")
        for n in range(1, open_orders + 1):
            conn.execute("INSERT INTO orders VALUES (?, 1)", (n,))
    finally:
        conn.close()


def test_the_sqlite_engine_loads_no_server_module_nor_driver() -> None:
    code = (
        "import sys\n"
        "import dbguard_plugin.engines, dbguard_plugin.engines.sqlite.backup\n"
        "import dbguard_plugin.engines.sqlite.verify, dbguard_plugin.engines.sqlite.preview\n"
        "import dbguard_plugin.engines.lease, dbguard_plugin.engines.preview\n"
        "import dbguard_plugin.catalog.retention, dbguard_plugin.catalog.journal\n"
        "heavy = ('sqlalchemy', 'psycopg', 'pymysql', 'zstandard')\n"
        "server = 'dbguard_plugin.engines.server.'\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)\n"
        "             or (m.startswith(server) and m != server + 'params')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_is_server_knows_the_server_backends(tmp_path: Path) -> None:
    assert not is_server(locate(f"sqlite:///{tmp_path / 'a.sqlite'}"))
    assert is_server(locate("postgresql://u@localhost/db", tmp_path / "s"))
    assert is_server(locate("mysql+pymysql://u@localhost/db", tmp_path / "s"))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_codecs_round_trip_and_name_the_file(compression: str) -> None:
    data = b"dbguard " * 50_000
    stored = io.BytesIO()
    if compression == "none":
        stored.write(data)
    else:
        with compressing(stored, compression) as writer:
            writer.write(data)
    stored.seek(0)
    assert decompressing(stored, compression).read() == data
    assert data_file("X", "sqlite", compression) == "X.sqlite" + SUFFIXES[compression]
    assert data_file("X", "mariadb", compression) == "X.sql" + SUFFIXES[compression]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_backup_names_its_file_by_the_codec_table(tmp_path: Path, compression: str) -> None:
    db = tmp_path / "bot.sqlite"
    _make_db(db)
    catalog = Catalog(tmp_path / "catalog")
    manifest = create_backup(locate(f"sqlite:///{db}"), catalog, "manual",
                             settings=BackupSettings(compression=compression))
    assert manifest.file == expected_file(manifest)
    assert file_digest(catalog.data_path(manifest)) == (manifest.size, manifest.sha256)
    assert verify_backup(catalog, manifest).ok


def test_verify_or_refuse_records_and_refuses_a_damaged_backup(tmp_path: Path) -> None:
    db = tmp_path / "bot.sqlite"
    _make_db(db)
    catalog = Catalog(tmp_path / "catalog")
    manifest = create_backup(locate(f"sqlite:///{db}"), catalog, "manual")
    verify_or_refuse(catalog, manifest)  # sound: nothing happens
    with open(catalog.data_path(manifest), "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff")

    with pytest.raises(VerificationError, match=rf"^backup {manifest.id} failed "
                       r"verification; nothing was copied: .*sha256"):
        verify_or_refuse(catalog, manifest, "quick_check", record=False,
                         nothing_was="copied")
    assert catalog.get(manifest.id).verified

    with pytest.raises(VerificationError, match=rf"^backup {manifest.id} failed "
                       r"verification; nothing was changed: "):
        verify_or_refuse(catalog, manifest)
    assert not catalog.get(manifest.id).verified


def test_preview_restore_verifies_then_compares(tmp_path: Path) -> None:
    db = tmp_path / "bot.sqlite"
    _make_db(db, open_orders=1)
    location = locate(f"sqlite:///{db}")
    catalog = Catalog(tmp_path / "catalog")
    manifest = create_backup(location, catalog, "manual", settings=BackupSettings(
        compression="gzip"))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO orders VALUES (2, 1)")
    conn.close()

    preview = preview_restore(location, catalog, manifest)
    assert preview.open_orders_lost == ["2"]
    assert {t.table: (t.rows_now, t.rows_backup) for t in preview.tables} == {
        "orders": (2, 1), "trades": (0, 0)}
