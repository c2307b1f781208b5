"""PostgreSQL: pg_dump custom-format backups and single-transaction restores.

The backup exports a snapshot from a REPEATABLE READ transaction and hands it to
``pg_dump --snapshot``; the same transaction counts every table's rows meanwhile, so the
manifest's row counts are those of exactly the data in the archive. The restore pipes
``pg_restore --single-transaction --clean`` into ``psql``: the whole replacement (drop,
create, copy, constraints) commits as one transaction or not at all, with the bot's
connections open, and only once pg_restore wrote its last line (its COMMIT). Locks on
the live tables are taken first with a bounded ``lock_timeout``, because the restore
script itself resets lock_timeout to 0.

The lease is lent to that transaction (see :meth:`PostgreSQL.restore_archive`): it
holds the orders lock itself until it commits or aborts, so it can neither commit
after its lease is gone nor leave the lease free while it may still commit.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.backup import BackupError, Progress
from dbguard_plugin.engines.server.credentials import pg_env, scrub
from dbguard_plugin.engines.server.dialect import (
    RESTORES_TABLE,
    DumpResult,
    LentLease,
    LiveFacts,
    OutcomeUnknown,
    fingerprint,
)
from dbguard_plugin.engines.server.holders import HOLDERS_TABLE
from dbguard_plugin.engines.server.locks import PG_CLASS, PG_ORDERS
from dbguard_plugin.engines.server.params import ServerParams
from dbguard_plugin.engines.server.tools import (
    ToolError,
    _failure,
    die_with_parent,
    find_tool,
    run_tool,
    stream_dump,
)
from dbguard_plugin.errors import ConfigError, DbGuardError

log = logging.getLogger(__name__)

_PACKAGE = "the PostgreSQL client tools (e.g. the postgresql-client package)"
#: libpq connection settings a URL's query string may carry through to psycopg
_PASS_THROUGH = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout",
                 "options", "target_session_attrs")

_TABLES = f"""
    SELECT n.nspname, c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
      AND n.nspname !~ '^pg_' AND c.relname NOT IN ('{HOLDERS_TABLE}', '{RESTORES_TABLE}')
    ORDER BY 1, 2
"""
_COLUMNS = f"""
    SELECT c.table_schema, c.table_name, c.ordinal_position, c.column_name, c.data_type,
           c.character_maximum_length, c.numeric_precision, c.numeric_scale, c.is_nullable
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE t.table_type = 'BASE TABLE' AND c.table_schema <> 'information_schema'
      AND c.table_schema !~ '^pg_'
      AND c.table_name NOT IN ('{HOLDERS_TABLE}', '{RESTORES_TABLE}')
"""
_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ", re.MULTILINE)
#: The restore transaction's application_name: how dbguard finds its backend.
_APP = "dbguard-restore:"
_CREATE_RESTORES = f"""CREATE TABLE IF NOT EXISTS {RESTORES_TABLE} (
    token varchar(64) PRIMARY KEY, state varchar(16) NOT NULL,
    updated timestamptz NOT NULL DEFAULT now())"""
#: the restore transaction of *marker* (by application_name) waits for the orders lock
_QUEUED = f"""
    SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.application_name = %s AND l.locktype = 'advisory' AND NOT l.granted
      AND l.classid = {PG_CLASS} AND l.objid = {PG_ORDERS} AND l.objsubid = 2
      AND l.mode = 'ExclusiveLock' AND l.database =
          (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _psycopg() -> Any:
    try:
        # why here: an optional extra, loaded only when a PostgreSQL database is used
        import psycopg
    except ImportError:
        raise ConfigError(
            "PostgreSQL databases need the psycopg driver: "
            "pip install 'dbguard-plugin[postgresql]'"
        ) from None
    return psycopg


def key(schema: str, table: str) -> str:
    """A table's name in manifests: ``schema.table``."""
    return f"{schema}.{table}"


class PostgreSQL:
    suffix = ".pgdump"

    def __init__(self, params: ServerParams) -> None:
        self.params = params

    # -- connections -------------------------------------------------------------------

    def connect(self) -> Any:
        """A new autocommit connection (psycopg 3), or a DbGuardError without secrets."""
        psycopg = _psycopg()
        p = self.params
        kwargs: dict[str, Any] = {
            "dbname": p.database, "application_name": "dbguard", "autocommit": True,
            "connect_timeout": int(p.query.get("connect_timeout", "10")),
        }
        for name, value in (("host", p.host), ("port", p.port), ("user", p.user),
                            ("password", p.password)):
            if value is not None:
                kwargs[name] = value
        kwargs.update({k: p.query[k] for k in _PASS_THROUGH if k in p.query})
        try:
            return psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise DbGuardError(
                f"{p.redacted}: cannot connect to PostgreSQL ({scrub(str(exc), p)}); "
                "check the URL and that the server is running"
            ) from None

    def _tables(self, conn: Any) -> list[tuple[str, str]]:
        return [(str(s), str(t)) for s, t in conn.execute(_TABLES).fetchall()]

    def _fingerprint(self, conn: Any) -> str:
        rows = sorted(conn.execute(_COLUMNS).fetchall(), key=lambda r: (r[0], r[1], r[2]))
        # positions renumbered per table: a restore closes the gaps of dropped columns
        numbered, last, n = [], None, 0
        for row in rows:
            n = n + 1 if (row[0], row[1]) == last else 1
            last = (row[0], row[1])
            numbered.append((row[0], row[1], n, *row[3:]))
        return fingerprint(numbered)

    def _counts(self, conn: Any, tables: list[tuple[str, str]]) -> dict[str, int]:
        sql = _psycopg().sql
        return {
            key(s, t): int(conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, t))
            ).fetchone()[0])
            for s, t in tables
        }

    def live_facts(self) -> LiveFacts:
        conn = self.connect()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            tables = self._tables(conn)
            facts = LiveFacts(self._counts(conn, tables), self._fingerprint(conn))
            conn.execute("COMMIT")
            return facts
        finally:
            conn.close()

    # -- backup ------------------------------------------------------------------------

    def dump(self, fd: int, compression: str, progress: Progress | None,
             started: Callable[[int], None] | None, *, plain: bool = False) -> DumpResult:
        """A custom-format archive: pg_dump compresses its table data itself (so
        *compression* is not applied), unless *plain*: zlib-compressed data would
        change from a changed row to the end of its table, defeating deduplication."""
        pg_dump = find_tool("pg_dump", _PACKAGE)
        conn = self.connect()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])
            version = str(conn.execute("SHOW server_version").fetchone()[0])
            tables = self._tables(conn)
            schema = self._fingerprint(conn)
            counts: dict[str, int] = {}
            failed: list[BaseException] = []

            def count() -> None:
                try:
                    counts.update(self._counts(conn, tables))
                except BaseException as exc:  # reported by the caller after the dump
                    failed.append(exc)

            # The rows are counted in the exported snapshot while pg_dump reads it: the
            # manifest then describes exactly the archive, at no extra wall time.
            counter = threading.Thread(target=count, name="dbguard-count", daemon=True)
            counter.start()
            try:
                digests = stream_dump(
                    [pg_dump, "--format=custom", *(["--compress=0"] if plain else []),
                     f"--snapshot={snapshot}", f"--exclude-table=*.{HOLDERS_TABLE}",
                     f"--exclude-table=*.{RESTORES_TABLE}"],
                    pg_env(self.params), fd, self.params, progress=progress, started=started,
                )
            finally:
                counter.join()
            if failed:
                raise BackupError(f"{self.params.redacted}: counting rows for the manifest "
                                  f"failed: {scrub(str(failed[0]), self.params)}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return DumpResult(digests, "none", counts, schema, version, "pg_restore --list")

    # -- verify ------------------------------------------------------------------------

    def check_new(self, path: Path, manifest: Manifest) -> list[str]:
        """A new backup is checked like a stored one: pg_restore reads its table of
        contents (a few milliseconds; the data is not decompressed)."""
        return self.verify_archive(path, manifest)

    def verify_archive(self, path: Path, manifest: Manifest) -> list[str]:
        """The archive lists cleanly and holds the data of every table the manifest names."""
        tool = find_tool("pg_restore", _PACKAGE)
        try:
            listing = run_tool([tool, "--list", str(path)], pg_env(self.params), self.params)
        except ToolError as exc:
            return [f"{path}: {exc}"]
        present = {key(s, t) for s, t in _TABLE_DATA.findall(listing)}
        missing = sorted(set(manifest.tables) - present)
        if missing:
            return [f"{path}: the archive has no data for {', '.join(missing[:5])}"]
        return []

    # -- restore -----------------------------------------------------------------------

    def restore_archive(self, path: Path, manifest: Manifest, lock_timeout: float,
                        lease: LentLease, marker: str) -> None:
        """Replace the database's tables with the archive's in ONE transaction that holds
        the lease itself and commits *marker* with the data.

        The transaction's first statement queues for the orders lock while *lease* still
        holds it. Once dbguard sees it waiting, it records *marker* as handed over and
        lends the lock: PostgreSQL grants it to the waiting transaction at once (a bot's
        try-lock never jumps a conflicting waiter), and dbguard queues again right
        behind. The transaction goes on only if it finds *marker* handed over, so one
        that queued after a killed dbguard's lease was gone aborts; it marks *marker*
        committed, which becomes visible exactly when (and if) the data commits.
        """
        if not re.fullmatch(r"[0-9a-f]{8,32}", marker):
            raise ValueError(f"not a restore marker: {marker!r}")
        pg_restore = find_tool("pg_restore", _PACKAGE)
        psql = find_tool("psql", _PACKAGE)
        table, prelude = self._prelude(manifest, lock_timeout, marker)
        env = pg_env(self.params, PGAPPNAME=_APP + marker)
        with tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2, \
                tempfile.TemporaryFile() as out:
            script, applier = _start(pg_restore, psql, path, prelude, env, (err1, err2, out))
            try:
                reach("server-restore:spawned")
                take_back = self._hand_over(lease, table, marker, applier, lock_timeout)
                if take_back is not None:
                    reach("server-restore:replacing")
                applied, scripted = applier.wait(), script.wait()
            except BaseException:
                _kill(applier, script)
                raise
            if take_back is None:  # psql ended before it queued: the lease never left us
                raise ToolError(_failure(psql, applied, err2, self.params))

            def failure() -> str:
                if scripted != 0:
                    return _failure(pg_restore, scripted, err1, self.params)
                if applied != 0:
                    return _failure(psql, applied, err2, self.params)
                return "the restore transaction ended without committing"

            self._settle(take_back, marker, max(lock_timeout, 1.0) + 10.0, failure)

    def _prelude(self, manifest: Manifest, lock_timeout: float,
                 marker: str) -> tuple[str, str]:
        """(the markers table's name, the statements the restore transaction runs first)."""
        psycopg = _psycopg()
        sql = psycopg.sql
        conn = self.connect()
        try:
            try:
                conn.execute(_CREATE_RESTORES)
            except psycopg.Error as exc:
                if _restores_table(conn) is None:
                    raise ToolError(f"cannot create {RESTORES_TABLE}, which makes the "
                                    f"restore's commit provable ({scrub(str(exc), self.params)})"
                                    ) from None
            table = _restores_table(conn)
            if table is None:  # created a moment ago: only a concurrent DROP gets here
                raise ToolError(f"{RESTORES_TABLE} vanished while the restore started")
            live = self._tables(conn)
            names = [sql.Identifier(s, t).as_string(conn) for s, t in live]
            extras = [sql.Identifier(s, t).as_string(conn) for s, t in live
                      if key(s, t) not in manifest.tables]
        finally:
            conn.close()
        prelude = [
            "BEGIN",
            # Waiting for the lease must not time out: dbguard hands it over only after it
            # saw this wait, and a wait given up then would leave the lease free.
            "SET LOCAL lock_timeout = 0", "SET LOCAL statement_timeout = 0",
            f"SELECT pg_advisory_xact_lock({PG_CLASS}, {PG_ORDERS})",
            f"DO $dbguard$ BEGIN UPDATE {table} SET state = 'committed', updated = now() "
            f"WHERE token = '{marker}' AND state = 'handed'; IF NOT FOUND THEN RAISE "
            "EXCEPTION 'dbguard: the lease was not handed to this restore'; END IF; "
            "END $dbguard$",
            f"SET LOCAL lock_timeout = '{max(1, int(lock_timeout * 1000))}ms'",
        ]
        if names:
            prelude.append(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE")
        if extras:  # tables created after the backup: the restored database has none
            prelude.append(f"DROP TABLE IF EXISTS {', '.join(extras)} CASCADE")
        return table, "; ".join(prelude)

    def _hand_over(self, lease: LentLease, table: str, marker: str,
                   applier: subprocess.Popen[bytes],
                   lock_timeout: float) -> Callable[[float], bool] | None:
        """Lend the lease once the restore transaction waits for it (see restore_archive);
        ``take_back``, or None when psql ended before it queued."""
        allowed = lock_timeout + 30.0  # psql starts and connects first
        deadline = time.monotonic() + allowed
        delay = 0.002
        while True:
            with lease.pinned() as conn:
                queued = bool(conn.execute(_QUEUED, (_APP + marker,)).fetchone()[0])
            if queued:
                break
            if applier.poll() is not None:
                return None
            if time.monotonic() >= deadline:
                raise ToolError(f"psql did not start the restore transaction within "
                                f"{allowed:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            # Recorded only now, once it waits: a transaction that queued later (after a
            # killed dbguard's lease was gone) finds no handed marker and cannot go on.
            with lease.pinned() as conn:
                conn.execute(f"INSERT INTO {table} (token, state) VALUES (%s, 'handed')",
                             (marker,))
            return lease.lend()
        except Exception as exc:  # the marker may be on the server and the lock gone
            raise OutcomeUnknown(f"handing the lease to the restore transaction failed "
                                 f"({scrub(str(exc), self.params)})") from None

    def _settle(self, take_back: Callable[[float], bool], marker: str, wait: float,
                failure: Callable[[], str]) -> None:
        """Return when the restore transaction committed; ToolError when it did not."""
        try:
            back = take_back(wait)
        except Exception as exc:
            raise OutcomeUnknown(f"taking the lease back failed ({scrub(str(exc), self.params)})"
                                 ) from None
        if not back:
            raise OutcomeUnknown(f"the lease did not come back from the restore transaction "
                                 f"within {wait:.0f} s of psql's end")
        # The transaction held the lock from its start to its end, so it came back only
        # once the transaction was over: the marker is final (its backend may linger).
        try:
            conn = self.connect()
            try:
                done = self._marker_state(conn, marker) == "committed"
            finally:
                conn.close()
        except Exception as exc:
            raise OutcomeUnknown(f"reading the restore's commit marker failed "
                                 f"({scrub(str(exc), self.params)})") from None
        if not done:
            raise ToolError(failure() + " (rolled back: the database is unchanged)")

    def committed(self, marker: str) -> bool | None:
        """True when the restore tagged *marker* committed; None while its transaction
        is still open (its backend is alive), False when it ended without committing."""
        conn = self.connect()
        try:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                            "= %s", (_APP + marker,)).fetchone()[0]:
                return None
            return self._marker_state(conn, marker) == "committed"
        finally:
            conn.close()

    def _marker_state(self, conn: Any, marker: str) -> str | None:
        table = _restores_table(conn)
        if table is None:
            return None
        row = conn.execute(f"SELECT state FROM {table} WHERE token = %s", (marker,)).fetchone()
        return None if row is None else str(row[0])

    def forget(self, marker: str) -> None:
        """Delete the marker row (best effort: a leftover row is a few bytes, never read)."""
        try:
            conn = self.connect()
        except DbGuardError:
            return
        try:
            table = _restores_table(conn)
            if table is not None:
                conn.execute(f"DELETE FROM {table} WHERE token = %s", (marker,))
        except _psycopg().Error as exc:
            log.debug("dbguard: forgetting restore marker %s failed: %s", marker, exc)
        finally:
            conn.close()

    def cleanup(self) -> None:
        """Nothing: a single-transaction restore leaves nothing behind."""


def _restores_table(conn: Any) -> str | None:
    """The markers table's name as this connection resolves it (quoted), or None."""
    row = conn.execute("SELECT to_regclass(%s)::text", (RESTORES_TABLE,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _start(pg_restore: str, psql: str, path: Path, prelude: str, env: dict[str, str],
           files: tuple[IO[bytes], IO[bytes], IO[bytes]],
           ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """pg_restore's script piped into psql; both die with this process (Linux)."""
    err1, err2, out = files
    # --single-transaction: the script is one BEGIN ... COMMIT (large objects too), and
    # ends in its COMMIT only when pg_restore wrote everything: a pg_restore that fails
    # half way leaves psql an open transaction, which the server rolls back.
    script = subprocess.Popen(
        [pg_restore, "--single-transaction", "--clean", "--if-exists", "--file=-", str(path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err1, env=env,
        preexec_fn=die_with_parent(),
    )
    try:
        applier = subprocess.Popen(
            [psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--command", prelude,
             "--file=-"],
            stdin=script.stdout, stdout=out, stderr=err2, env=env,
            preexec_fn=die_with_parent(),
        )
    except BaseException:
        _kill(script)
        raise
    finally:
        assert script.stdout is not None
        script.stdout.close()  # psql owns the pipe now
    return script, applier


def _kill(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
