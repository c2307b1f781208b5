"""PostgreSQL: pg_dump custom-format backups and single-transaction restores.

The backup exports a snapshot from a REPEATABLE READ transaction and hands it to
``pg_dump --snapshot``; the same transaction counts every table's rows meanwhile, so the
manifest's row counts are those of exactly the data in the archive. The restore pipes
``pg_restore --clean`` into ``psql --single-transaction``: the whole replacement (drop,
create, copy, constraints) commits as one transaction or not at all, with the bot's
connections open. Locks on the live tables are taken first with a bounded
``lock_timeout``, because the restore script itself resets lock_timeout to 0.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbguard_plugin.backup import BackupError
from dbguard_plugin.errors import ConfigError, DbGuardError
from dbguard_plugin.manifest import Manifest
from dbguard_plugin.servers.credentials import pg_env, scrub
from dbguard_plugin.servers.dialect import HOLDERS_TABLE, DumpResult, LiveFacts, fingerprint
from dbguard_plugin.servers.params import ServerParams
from dbguard_plugin.servers.tools import (
    Progress,
    ToolError,
    _failure,
    find_tool,
    run_tool,
    stream_dump,
)

_PACKAGE = "the PostgreSQL client tools (e.g. the postgresql-client package)"
#: libpq connection settings a URL's query string may carry through to psycopg
_PASS_THROUGH = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout",
                 "options", "target_session_attrs")

_TABLES = f"""
    SELECT n.nspname, c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
      AND n.nspname !~ '^pg_' AND c.relname <> '{HOLDERS_TABLE}'
    ORDER BY 1, 2
"""
_COLUMNS = f"""
    SELECT c.table_schema, c.table_name, c.ordinal_position, c.column_name, c.data_type,
           c.character_maximum_length, c.numeric_precision, c.numeric_scale, c.is_nullable
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE t.table_type = 'BASE TABLE' AND c.table_schema <> 'information_schema'
      AND c.table_schema !~ '^pg_' AND c.table_name <> '{HOLDERS_TABLE}'
"""
_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ", re.MULTILINE)


def _psycopg() -> Any:
    try:
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
             started: Callable[[int], None] | None) -> DumpResult:
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
                    [pg_dump, "--format=custom", f"--snapshot={snapshot}",
                     f"--exclude-table=*.{HOLDERS_TABLE}"],
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

    def restore_archive(self, path: Path, manifest: Manifest, lock_timeout: float) -> None:
        """Replace the database's tables with the archive's in ONE transaction."""
        pg_restore = find_tool("pg_restore", _PACKAGE)
        psql = find_tool("psql", _PACKAGE)
        sql = _psycopg().sql
        conn = self.connect()
        try:
            live = self._tables(conn)
            names = [sql.Identifier(s, t).as_string(conn) for s, t in live]
            extras = [sql.Identifier(s, t).as_string(conn) for s, t in live
                      if key(s, t) not in manifest.tables]
        finally:
            conn.close()
        prelude = [f"SET LOCAL lock_timeout = '{max(1, int(lock_timeout * 1000))}ms'"]
        if names:
            prelude.append(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE")
        if extras:  # tables created after the backup: the restored database has none
            prelude.append(f"DROP TABLE IF EXISTS {', '.join(extras)} CASCADE")
        env = pg_env(self.params)
        with tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2, \
                tempfile.TemporaryFile() as out:
            script = subprocess.Popen(
                [pg_restore, "--clean", "--if-exists", "--file=-", str(path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err1, env=env,
            )
            try:
                applier = subprocess.Popen(
                    [psql, "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
                     "--single-transaction", "--command", "; ".join(prelude),
                     "--file=-"],
                    stdin=script.stdout, stdout=out, stderr=err2, env=env,
                )
            finally:
                assert script.stdout is not None
                script.stdout.close()  # psql owns the pipe now
            try:
                applied = applier.wait()
                scripted = script.wait()
            except BaseException:
                for proc in (applier, script):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
                raise
            if scripted != 0:
                raise ToolError(_failure(pg_restore, scripted, err1, self.params))
            if applied != 0:
                raise ToolError(_failure(psql, applied, err2, self.params)
                                + " (rolled back: the database is unchanged)")

    def cleanup(self) -> None:
        """Nothing: a single-transaction restore leaves nothing behind."""
