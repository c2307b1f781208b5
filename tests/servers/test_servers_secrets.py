"""Passwords never reach the process list, the manifest, the status table or errors."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path

import pytest

from dbguard_plugin.engines.server import backup as server_backup
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.operations.restore import restore

pytestmark = pytest.mark.servers


@contextlib.contextmanager
def user_with_password(db):
    """A login role / user that owns the test database, with a password."""
    user = f"dbguard_u_{secrets.token_hex(4)}"
    password = f"S3cret-{secrets.token_hex(8)}"
    if db.kind == "postgresql":
        db.run(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        db.run(f"ALTER DATABASE {db.name} OWNER TO {user}")
    else:
        db.run(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        db.run(f"GRANT ALL ON `{db.name}`.* TO '{user}'@'%'")
        db.run(f"GRANT ALL ON `dbguard\\_r\\_%`.* TO '{user}'@'%'")  # restore scratch dbs
    try:
        yield user, password
    finally:
        if db.kind == "postgresql":
            db.run(f"ALTER DATABASE {db.name} OWNER TO CURRENT_USER")
            db.run(f"REASSIGN OWNED BY {user} TO CURRENT_USER")
            db.run(f"DROP OWNED BY {user}")
            db.run(f"DROP ROLE {user}")
        else:
            db.run(f"DROP USER '{user}'@'%'")


def read_proc(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_ps_and_manifest_never_show_the_password(server_db, server_guards, monkeypatch):
    with user_with_password(server_db) as (user, password):
        url = server_db.with_user(user, password)
        assert password in url
        guard = server_guards(url)
        # tables owned by the user, so that its restore may replace them
        conn = dialect_for(guard.location).connect()
        try:
            for sql in ("CREATE TABLE fills (id integer PRIMARY KEY)",
                        "INSERT INTO fills (id) VALUES (1), (2)"):
                with conn.cursor() as cur:
                    cur.execute(sql)
        finally:
            conn.close()

        # A second session holds the table, so the dump tool waits, alive, while the
        # test reads what `ps` would show of it.
        blocker = server_db.connect()
        with blocker.cursor() as cur:
            if server_db.kind == "postgresql":
                cur.execute("BEGIN")
                cur.execute("LOCK TABLE fills IN ACCESS EXCLUSIVE MODE")
            else:
                cur.execute("LOCK TABLES fills WRITE")
        seen: dict[str, bytes] = {}

        tool = b"pg_dump" if server_db.kind == "postgresql" else b"mariadb-dump"

        def started(pid: int) -> None:
            # Debian's /usr/bin/pg_dump is a wrapper that execs the real tool in place:
            # wait (bounded) for the exec, the tool then waits on the blocker's lock.
            deadline = time.monotonic() + 60
            while not read_proc(pid, "cmdline").split(b"\0")[0].endswith(tool):
                assert time.monotonic() < deadline, read_proc(pid, "cmdline")
                time.sleep(0.005)
            seen["cmdline"] = read_proc(pid, "cmdline")
            seen["stat"] = read_proc(pid, "stat")
            seen["environ"] = read_proc(pid, "environ")
            with blocker.cursor() as cur:
                cur.execute("COMMIT" if server_db.kind == "postgresql" else "UNLOCK TABLES")

        monkeypatch.setattr(server_backup, "on_dump_started", started)
        guard.start_session("S-1")
        assert guard.admit_order(timeout=0)
        guard.order_event("A-1", "submitted", symbol="BTC/USDT", side="buy")
        manifest = guard.backup("manual")

        argv = seen["cmdline"].split(b"\0")
        assert argv[0].endswith(tool)
        assert b") Z " not in seen["stat"]  # the tool was running, not a zombie
        assert password.encode() not in seen["cmdline"]
        assert not any(arg.startswith((b"-p", b"--password")) for arg in argv)
        if server_db.kind == "mariadb":
            assert b"MYSQL_PWD" not in seen["environ"]
            option_file = next(a for a in argv if a.startswith(b"--defaults-extra-file="))
            assert not os.path.exists(option_file.split(b"=", 1)[1])  # removed afterwards

        text = guard.catalog.manifest_path(manifest.id).read_text()
        assert password not in text
        assert f"{user}:***@" in json.loads(text)["source"]
        rows = server_db.run("SELECT data FROM dbguard_holders")
        assert rows
        assert all(password not in str(r[0]) for r in rows)
        assert password not in json.dumps(guard.status())

        guard.order_event("A-1", "filled")
        guard.end_session()
        restore(guard, manifest.id)  # psql / mariadb get it the same way


def test_errors_name_the_server_without_the_password(server_db, server_guards):
    with user_with_password(server_db) as (user, _password):
        wrong = f"Wr0ng-{secrets.token_hex(6)}"
        # a database that does not exist: this PostgreSQL trusts local logins, so a
        # wrong password alone would not be refused
        url = server_db.url_obj.set(username=user, password=wrong,
                                    database="dbguard_missing").render_as_string(False)
        guard = server_guards(url)
        with pytest.raises(DbGuardError) as caught:
            guard.backup("manual")
        message = str(caught.value)
        assert wrong not in message
        assert f"{user}:***@" in message
        assert "dump tool" in message
        with pytest.raises(DbGuardError) as again:  # the lease's own connection
            guard.lease.probe()
        assert wrong not in str(again.value)
        assert f"{user}:***@" in str(again.value)
