"""A server restore never outlives its lease, and is journaled and recovered like SQLite's.

Real servers, real processes: ``dbguard restore`` runs as a CLI process that the test
kills with SIGKILL while its replacement waits on the server (for a long reader's lock)
or at each named step (``DBGUARD_CRASH_AT``). Afterwards the database holds either the
old content plus every row a bot admitted after the kill committed, or the restore,
recorded; never is an admitted bot's row lost, and the next command's recovery sentence
says which.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

#: Bound for every wait (as tests/conftest.py's): generous for a slow CI machine.
TIMEOUT = 60.0

CRASH_ENV = "DBGUARD_CRASH_AT"
OLD, NEW = [1, 2, 3], [1, 2]

#: A bot on its own host (its own state directory): each stdin line "ORDER_ID WAIT"
#: asks admit_order(timeout=WAIT); admitted, it commits the order's row and reports
#: it filled. Prints "RESULT COMMITTED ID" or "RESULT REFUSED ID". argv: kind, url
BOT = """
    import sys
    from sqlalchemy.engine import make_url
    from dbguard_plugin import Guard
    from dbguard_plugin.settings.config import Config

    kind, url = sys.argv[1], sys.argv[2]
    u = make_url(url)

    def commit_row(order_id):
        if kind == "postgresql":
            import psycopg
            conn = psycopg.connect(host=u.host, port=u.port, user=u.username,
                                   password=u.password, dbname=u.database)
        else:
            import pymysql
            conn = pymysql.connect(host=u.host, port=u.port, user=u.username,
                                   password=u.password or "", database=u.database)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO orders (id, state) VALUES (%s, 'filled')", (order_id,))
        conn.commit()
        conn.close()

    # No session backups: a pg_dump would wait (behind the restore's lock request) for
    # the very reader the test holds, and this bot must try its order meanwhile.
    guard = Guard(Config.from_mapping({"backup_on_session_start": False,
                                       "backup_on_session_end": False}), db_url=url)
    guard.start_session("S-1")
    print("READY", flush=True)
    for line in sys.stdin:
        order_id, wait = line.split()
        if not guard.admit_order(timeout=float(wait)):
            print("RESULT REFUSED " + order_id, flush=True)
            continue
        guard.order_event(order_id, "submitted", symbol="BTC/USDT", side="buy")
        commit_row(order_id)
        guard.order_event(order_id, "filled")
        print("RESULT COMMITTED " + order_id, flush=True)
    guard.end_session()
    guard.close()
"""


def ids(db, table):
    return [row[0] for row in db.run(f"SELECT id FROM {table} ORDER BY id")]


def prepare(db, run_cli):
    """fills 1, 2 backed up; then 3 written: OLD is the live content, NEW the backup's."""
    db.create_tables("fills", "orders")
    db.run("INSERT INTO fills (id, qty) VALUES (1, 1), (2, 2)")
    made = run_cli("backup", "--json", "--db", db.url)
    assert made.returncode == 0, made.stderr
    db.run("INSERT INTO fills (id, qty) VALUES (3, 3)")
    return json.loads(made.stdout)["id"]


def wait_for(condition, what, proc=None):
    """Poll *condition* until true, bounded; fail early if *proc* exits meanwhile."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"dbguard exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def restore_waiting_for_a_lock(db):
    """The replacement itself waits on the server for a table lock."""
    if db.kind == "postgresql":
        rows = db.run(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name LIKE 'dbguard%%' AND a.datname = "
            "current_database() AND l.locktype = 'relation' AND NOT l.granted")
    else:
        rows = db.run("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                      "AND INFO LIKE 'RENAME TABLE%%' AND STATE LIKE '%%metadata lock%%'",
                      (db.name,))
    return rows[0][0] > 0


def restore_running(db):
    """Anything of a replacement still on the server (its session or statement)."""
    if db.kind == "postgresql":
        rows = db.run("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                      "LIKE 'dbguard-restore:%%' AND datname = current_database()")
    else:
        rows = db.run("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                      "AND INFO LIKE 'RENAME TABLE%%'", (db.name,))
    return rows[0][0] > 0


def wait_settled(db, probe):
    """A killed restore's server side ends a moment after the process: wait, bounded."""
    def settled():
        view = probe.lease.probe()
        return view.orders_free and not restore_running(db)

    wait_for(settled, "the killed restore to end on the server")


def recovered(result):
    prefix = "dbguard: recovered: "
    return [line[len(prefix):] for line in result.stderr.splitlines()
            if line.startswith(prefix)]


def status(run_cli, db):
    result = run_cli("status", "--json", "--db", db.url)
    assert result.returncode == 0, result.stderr
    return result, Path(json.loads(result.stdout)["state_dir"])


def assert_recorded_iff_new(db, state_dir, backup_id, said):
    """OLD: nothing recorded, the sentence says it never committed. NEW: recorded
    (last replacement and generation), the sentence says it finished."""
    fills = ids(db, "fills")
    assert fills in (OLD, NEW), fills
    last = state_dir / "last-replacement.json"
    assert not (state_dir / "operation.json").exists()
    if fills == OLD:
        assert not last.exists()
        assert all("never committed" in s for s in said), said
        return "old"
    assert json.loads(last.read_text())["backup_id"] == backup_id
    generation = json.loads((state_dir / "generation.json").read_text())["generation"]
    assert generation >= 1
    assert all(s.startswith(f"finished the interrupted restore of backup {backup_id}: it "
                            "committed") for s in said), said
    return "new"


class Reader:
    """A long reader: a transaction holding a lock on fills until end()."""

    def __init__(self, db):
        self.conn = db.connect()
        with self.conn.cursor() as cur:
            if db.kind == "postgresql":
                cur.execute("BEGIN")
                cur.execute("LOCK TABLE fills IN ACCESS SHARE MODE")
            else:
                cur.execute("START TRANSACTION")
                cur.execute("SELECT count(*) FROM fills")
                cur.fetchall()

    def end(self):
        with self.conn.cursor() as cur:
            cur.execute("ROLLBACK")


def start_restore(run_cli, tmp_path, db, backup_id):
    log = tmp_path / "restore.stderr"
    with open(log, "w", encoding="utf-8") as err:
        return run_cli.start("restore", backup_id, "--yes", "--db", db.url,
                             stdout=subprocess.DEVNULL, stderr=err)


def kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL


def test_a_killed_restore_waiting_for_a_reader_never_loses_an_admitted_bots_row(
        server_db, run_cli, spawn, child_env, server_guards, tmp_path):
    db = server_db
    backup_id = prepare(db, run_cli)
    reader = Reader(db)
    operator = start_restore(run_cli, tmp_path, db, backup_id)
    try:
        wait_for(lambda: restore_waiting_for_a_lock(db),
                 "the replacement to wait for the reader's lock", operator)
    finally:
        kill(operator)

    # A bot on another host: its own state directory, so its session start does not
    # settle the journal itself (the operator's next command must).
    bot = spawn(BOT, db.kind, db.url, env=child_env(XDG_STATE_HOME=str(tmp_path / "bot")))
    bot.send("O-1 0")
    first = bot.expect("RESULT")
    reader.end()
    wait_settled(db, server_guards(db.url))
    bot.send("O-2 60")
    second = bot.expect("RESULT")
    assert second == "RESULT COMMITTED O-2"

    result, state_dir = status(run_cli, db)
    said = recovered(result)
    assert len(said) == 1, result.stderr
    committed = [line.split()[2] for line in (first, second) if "COMMITTED" in line]
    assert ids(db, "orders") == sorted(committed)  # never an admitted bot's row lost
    outcome = assert_recorded_iff_new(db, state_dir, backup_id, said)
    if db.kind == "postgresql":
        # The restore transaction held the lease itself: no bot got in while it could
        # still commit, and with psql killed along with dbguard it could not commit.
        assert first == "RESULT REFUSED O-1"
        assert outcome == "old"


#: step -> what the database may hold after a SIGKILL there
POINTS = {
    "server-restore:locked": ("old",),
    "server-restore:safety-done": ("old",),
    "server-restore:journal-written": ("old",),
    "server-restore:spawned": ("old",),  # PostgreSQL: psql started, lease not lent yet
    "server-restore:replacing": ("old", "new"),  # in flight on the server
    "server-restore:committed": ("new",),
    "server-restore:checked": ("new",),
    "restore:recorded": ("new",),
    "restore:done": ("new",),
}
#: steps before the journal is written or after it is cleared: nothing to recover
QUIET = {"server-restore:locked", "server-restore:safety-done", "restore:done"}
#: MariaDB's replacement is a statement, not a child process: it has no "spawned"
CASES = [(kind, point) for kind in ("postgresql", "mariadb") for point in POINTS
         if kind == "postgresql" or point != "server-restore:spawned"]


@pytest.mark.parametrize(("kind", "point"), CASES)
def test_a_restore_killed_at_each_step_is_old_or_new_and_recovery_says_which(
        make_server_db, run_cli, child_env, server_guards, kind, point):
    db = make_server_db(kind)
    backup_id = prepare(db, run_cli)
    crashed = run_cli("restore", backup_id, "--yes", "--db", db.url,
                      env=child_env(**{CRASH_ENV: point}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    wait_settled(db, server_guards(db.url))

    result, state_dir = status(run_cli, db)
    said = recovered(result)
    outcome = assert_recorded_iff_new(db, state_dir, backup_id, said)
    assert outcome in POINTS[point]
    assert len(said) == (0 if point in QUIET else 1), result.stderr
    again = run_cli("status", "--db", db.url)
    assert recovered(again) == [], again.stderr  # settled once, for good


def test_a_restore_whose_check_fails_killed_while_putting_back_is_recorded_for_rollback(
        pg_db, run_cli, child_env, server_guards):
    """The restore committed and failed its check; the put-back never started. Recovery
    records the restore, so 'dbguard rollback' puts the safety backup back."""
    db = pg_db
    backup_id = prepare(db, run_cli)
    result, _ = status(run_cli, db)
    manifest = Path(json.loads(result.stdout)["backups"]) / f"{backup_id}.json"
    data = json.loads(manifest.read_text())
    data["tables"]["public.fills"] = 99  # the restored database cannot pass its check
    manifest.write_text(json.dumps(data))

    crashed = run_cli("restore", backup_id, "--yes", "--db", db.url,
                      env=child_env(**{CRASH_ENV: "server-restore:rolling-back"}))
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    wait_settled(db, server_guards(db.url))
    result, state_dir = status(run_cli, db)
    said = recovered(result)
    assert len(said) == 1, result.stderr
    assert "committed but failed its check" in said[0]
    assert ids(db, "fills") == NEW  # as the sentence says: the database holds the backup
    last = json.loads((state_dir / "last-replacement.json").read_text())
    assert last["backup_id"] == backup_id
    assert last["safety_id"] in said[0]

    rolled = run_cli("rollback", "--yes", "--db", db.url)
    assert rolled.returncode == 0, rolled.stderr
    assert ids(db, "fills") == OLD


def _orphans(marker_dir):
    """pids of processes whose environment names *marker_dir* (this test's tools)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"PGAPPNAME=dbguard-restore:" in environ and str(marker_dir).encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_orphaned_restore_transaction_cannot_commit_without_its_lease(
        pg_db, run_cli, spawn, child_env, server_guards, tmp_path):
    """Where tools do not die with dbguard, the restore transaction itself refuses to
    go on: dbguard died before lending it the lease, so the lease may have been free
    (and a bot in and out) before the transaction got the lock."""
    db = pg_db
    backup_id = prepare(db, run_cli)
    env = child_env(**{CRASH_ENV: "server-restore:spawned", "DBGUARD_ORPHAN_TOOLS": "1"})
    crashed = run_cli("restore", backup_id, "--yes", "--db", db.url, env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    marker_dir = tmp_path / "xdg-state"
    wait_for(lambda: not _orphans(marker_dir), "the orphaned psql to give up")
    wait_settled(db, server_guards(db.url))

    bot = spawn(BOT, db.kind, db.url, env=child_env(XDG_STATE_HOME=str(tmp_path / "bot")))
    bot.send("O-1 60")
    assert bot.expect("RESULT") == "RESULT COMMITTED O-1"
    result, state_dir = status(run_cli, db)
    said = recovered(result)
    assert assert_recorded_iff_new(db, state_dir, backup_id, said) == "old"
    assert len(said) == 1, result.stderr
    assert ids(db, "orders") == ["O-1"]
