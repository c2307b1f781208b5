"""Backups and restores of real PostgreSQL and MariaDB databases, with a live writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dbguard_plugin.catalog import expected_file
from dbguard_plugin.engines import verify_backup
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.operations.restore import RestoreError, restore, rollback

pytestmark = pytest.mark.servers

#: A writer that commits one fill and its ledger entry per transaction, forever.
#: argv: kind, url. Prints READY after its first 50 commits.
WRITER = """
    import sys
    from sqlalchemy.engine import make_url

    kind, url = sys.argv[1], make_url(sys.argv[2])
    if kind == "postgresql":
        import psycopg
        conn = psycopg.connect(host=url.host, port=url.port, user=url.username,
                               password=url.password, dbname=url.database)
    else:
        import pymysql
        conn = pymysql.connect(host=url.host, port=url.port, user=url.username,
                               password=url.password or "", database=url.database)
    n = 0
    while True:
        n += 1
        with conn.cursor() as cur:
            cur.execute("INSERT INTO fills (id, qty) VALUES (%s, %s)", (n, n * 0.5))
            cur.execute("INSERT INTO ledger (fill_id, note) VALUES (%s, %s)",
                        (n, f"fill {n}: it's (a),(b) test"))
        conn.commit()
        if n == 50:
            print("READY", flush=True)
"""


def ids(db, table, column="id"):
    return [row[0] for row in db.run(f"SELECT {column} FROM {table} ORDER BY 1")]


def max_id(db):
    return db.run("SELECT COALESCE(MAX(id), 0) FROM fills")[0][0]


def table_key(db, name):
    return f"public.{name}" if db.kind == "postgresql" else name


def test_round_trip_under_a_live_writer_restores_exactly_the_committed_rows(
        server_db, server_guards, spawn):
    server_db.create_tables("fills", "ledger")
    writer = spawn(WRITER, server_db.kind, server_db.url)
    guard = server_guards(server_db.url)

    before = max_id(server_db)
    manifest = guard.backup("manual")
    after = max_id(server_db)
    writer.kill()

    backed_up = manifest.tables[table_key(server_db, "fills")]
    # The dump is one snapshot taken between the two looks: every fill committed before
    # it, and every fill's ledger entry (one transaction) with it.
    assert before <= backed_up <= after
    assert manifest.tables[table_key(server_db, "ledger")] == backed_up
    assert manifest.backend == server_db.kind
    assert manifest.server_version
    assert manifest.file == expected_file(manifest)
    assert verify_backup(guard.catalog, manifest).ok
    assert max_id(server_db) > backed_up  # the writer went on after the backup

    present = max_id(server_db)
    outcome = restore(guard, manifest.id)

    assert ids(server_db, "fills") == list(range(1, backed_up + 1))
    assert ids(server_db, "ledger", "fill_id") == list(range(1, backed_up + 1))
    safety = guard.catalog.get(outcome.safety_id)
    assert safety.reason == "pre-restore"
    assert safety.tables[table_key(server_db, "fills")] == present
    # the restored tables still take writes with their keys and constraints
    server_db.run("INSERT INTO fills (id, qty) VALUES (%s, 1)", (backed_up + 1,))
    with pytest.raises(Exception, match=r"(?i)duplicate|unique"):
        server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1)")


def test_rollback_puts_the_safety_backup_back(server_db, server_guards):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    guard = server_guards(server_db.url)
    old = guard.backup("manual")
    server_db.run("INSERT INTO fills (id, qty) VALUES (3, 3)")
    server_db.run("CREATE TABLE later (x integer)")

    restore(guard, old.id)
    assert ids(server_db, "fills") == [1, 2]
    tables = {r[0] for r in server_db.run(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        + ("'public'" if server_db.kind == "postgresql" else "DATABASE()"))}
    assert "later" not in tables  # the database is the backup's, not a merge

    rollback(guard)
    assert ids(server_db, "fills") == [1, 2, 3]


def test_a_failed_check_puts_the_database_back(server_db, server_guards):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    guard = server_guards(server_db.url)
    manifest = guard.backup("manual")
    server_db.run("INSERT INTO fills (id, qty) VALUES (3, 3)")
    # A manifest that promises more rows than the archive holds: the restored database
    # cannot pass its check against it.
    path = guard.catalog.manifest_path(manifest.id)
    data = json.loads(path.read_text())
    data["tables"][table_key(server_db, "fills")] = 99
    path.write_text(json.dumps(data))

    with pytest.raises((RestoreError, VerificationError)) as caught:
        restore(guard, manifest.id)

    assert "nothing was changed" in str(caught.value) or "put back" in str(caught.value)
    assert ids(server_db, "fills") == [1, 2, 3]


def test_a_damaged_backup_is_refused_before_anything_changes(server_db, server_guards):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1)")
    guard = server_guards(server_db.url)
    manifest = guard.backup("manual")
    server_db.run("INSERT INTO fills (id, qty) VALUES (2, 2)")
    data = guard.catalog.data_path(manifest)
    with open(data, "r+b") as fh:
        fh.seek(manifest.size // 2)
        fh.write(b"\x00garbage\x00")

    with pytest.raises(VerificationError, match="nothing was changed"):
        restore(guard, manifest.id)
    assert ids(server_db, "fills") == [1, 2]


def test_backups_are_private_and_compressed_on_request(mariadb_db, server_guards):
    mariadb_db.create_tables("fills", "ledger")
    mariadb_db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    guard = server_guards(mariadb_db.url, compression="gzip")
    manifest = guard.backup("manual")
    path = guard.catalog.data_path(manifest)
    assert path.name.endswith(".sql.gz")
    assert manifest.compression == "gzip"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(guard.catalog.directory).st_mode & 0o777 == 0o700
    mariadb_db.run("DELETE FROM fills WHERE id = 2")
    restore(guard, manifest.id)
    assert ids(mariadb_db, "fills") == [1, 2]


def test_the_holders_table_is_never_backed_up(server_db, server_guards):
    server_db.create_tables("fills", "ledger")
    guard = server_guards(server_db.url)
    guard.start_session("S-1")
    assert guard.admit_order()
    guard.order_event("A-1", "submitted", symbol="BTC/USDT", side="buy")
    guard.publish_status_now()
    manifest = guard.backup("manual")
    assert not any("dbguard_holders" in name for name in manifest.tables)
    assert manifest.trading_state["orders_in_flight"] == ["A-1"]
    assert Path(guard.catalog.data_path(manifest)).read_bytes().count(b"dbguard_holders") == 0


def test_the_cli_backs_up_previews_and_restores_a_server_database(server_db, run_cli):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    made = run_cli("backup", "--json", "--db", server_db.url)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    server_db.run("INSERT INTO fills (id, qty) VALUES (3, 3)")

    preview = run_cli("restore", backup_id, "--preview", "--db", server_db.url)
    assert preview.returncode == 0, preview.stderr
    assert table_key(server_db, "fills") in preview.stdout

    done = run_cli("restore", backup_id, "--yes", "--json", "--db", server_db.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backup_id"] == backup_id
    assert ids(server_db, "fills") == [1, 2]
    status = run_cli("status", "--json", "--db", server_db.url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["lease"]["orders"] == "free"


def test_a_server_preview_counts_the_rows_lost_where_the_counts_decide_it(
        server_db, run_cli):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    made = run_cli("backup", "--json", "--db", server_db.url)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    server_db.run("CREATE TABLE extra (id integer PRIMARY KEY)")
    server_db.run("INSERT INTO extra (id) VALUES (1), (2), (3)")
    server_db.run("INSERT INTO fills (id, qty) VALUES (3, 3)")

    preview = run_cli("restore", backup_id, "--preview", "--json", "--db", server_db.url)
    assert preview.returncode == 0, preview.stderr
    lost = {t["table"]: t["missing_from_backup"]
            for t in json.loads(preview.stdout)["preview"]["tables"]}
    # A table the backup lacks loses every live row; where both sides have the table,
    # only loading the archive could compare keys, so it is not counted (None, '-').
    assert lost[table_key(server_db, "extra")] == 3
    assert lost[table_key(server_db, "fills")] is None


def test_a_restore_blocked_by_an_open_transaction_gives_up_and_changes_nothing(
        server_db, server_guards):
    server_db.create_tables("fills", "ledger")
    server_db.run("INSERT INTO fills (id, qty) VALUES (1, 1)")
    guard = server_guards(server_db.url, busy_timeout=1)
    manifest = guard.backup("manual")
    server_db.run("INSERT INTO fills (id, qty) VALUES (2, 2)")
    # A bot's session left "idle in transaction" after reading the table: the swap
    # must wait for its lock, and gives up after busy_timeout.
    bot = server_db.connect()
    with bot.cursor() as cur:
        cur.execute("BEGIN" if server_db.kind == "postgresql" else "START TRANSACTION")
        cur.execute("SELECT count(*) FROM fills")
        cur.fetchall()

    with pytest.raises(RestoreError, match="nothing was changed"):
        restore(guard, manifest.id)

    bot.rollback()
    assert ids(server_db, "fills") == [1, 2]
    restore(guard, manifest.id)  # the same restore goes through once the bot lets go
    assert ids(server_db, "fills") == [1]


def test_a_server_restore_refreshes_the_host_and_tells_subscribers(
        server_db, server_guards, register_plugin):
    from dbguard_plugin import signals
    from dbguard_plugin.plugin.hookspecs import hookimpl

    server_db.create_tables("fills", "ledger")
    guard = server_guards(server_db.url)
    manifest = guard.backup("manual")
    refreshed, told = [], []

    class Host:
        @hookimpl
        def dbguard_refresh(self, guard, operation):
            refreshed.append(operation.value)

    def on_replaced(sender, **extra):
        told.append((extra["operation"], extra["backup_id"]))

    register_plugin(Host())
    signals.database_replaced.connect(on_replaced)
    try:
        outcome = restore(guard, manifest.id)
    finally:
        signals.database_replaced.disconnect(on_replaced)
    assert refreshed == ["restore"]
    assert told == [("restore", manifest.id)]
    assert outcome.safety_id
