"""MariaDB/MySQL: mariadb-dump backups and restores swapped in by one RENAME TABLE.

The backup is ``mariadb-dump --single-transaction`` (a consistent InnoDB snapshot that
never blocks the bot's writers); its rows are counted from the stream itself, because a
MariaDB snapshot cannot be shared with a second connection. The restore loads the
archive into a scratch database beside the live one, checks it there, and then swaps
every table in with ONE ``RENAME TABLE`` statement, which is atomic: the bot sees the
old tables or the new ones. The old tables go to a second scratch database that is
dropped once the swap has been checked.

The RENAME runs on the lease's own connection: MariaDB releases that connection's named
locks only when its thread ends, after the RENAME finished or was abandoned, so the swap
can never happen once the lease is gone. It also moves a one-row marker table in, so
whether it happened can be read afterwards (see :meth:`MariaDB.committed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.backup import Progress
from dbguard_plugin.engines.server.credentials import mariadb_option_file, scrub
from dbguard_plugin.engines.server.dialect import (
    RESTORES_TABLE,
    DumpResult,
    LentLease,
    LiveFacts,
    OutcomeUnknown,
    compare,
    fingerprint,
)
from dbguard_plugin.engines.server.holders import HOLDERS_TABLE
from dbguard_plugin.engines.server.params import ServerParams
from dbguard_plugin.engines.server.sqldump import DumpReader
from dbguard_plugin.engines.server.tools import (
    ToolError,
    find_tool,
    read_plain,
    run_tool,
    stream_dump,
)
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError

_PACKAGE = "the MariaDB client tools (e.g. the mariadb-client package)"
#: Scratch databases of restores, dbguard_r_<hash of the database>_n_<random> for the
#: restored tables and ..._o_<random> for the old ones.
SCRATCH_PREFIX = "dbguard_r"
_COLUMNS = f"""
    SELECT c.TABLE_NAME, c.COLUMN_NAME, c.ORDINAL_POSITION, c.COLUMN_TYPE, c.IS_NULLABLE
    FROM information_schema.COLUMNS c
    JOIN information_schema.TABLES t
      ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
    WHERE c.TABLE_SCHEMA = %s AND t.TABLE_TYPE = 'BASE TABLE'
      AND c.TABLE_NAME NOT IN ('{HOLDERS_TABLE}', '{RESTORES_TABLE}')
"""
_TABLES = f"""
    SELECT TABLE_NAME FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'
      AND TABLE_NAME NOT IN ('{HOLDERS_TABLE}', '{RESTORES_TABLE}')
    ORDER BY TABLE_NAME
"""


def scratch_prefix(database: str) -> str:
    """The names of *database*'s scratch databases begin with this: a cleanup never drops
    another database's restore in progress on the same server."""
    return f"{SCRATCH_PREFIX}_{hashlib.sha256(database.encode()).hexdigest()[:8]}_"


def _pymysql() -> Any:
    try:
        # why here: an optional extra, loaded only when a MariaDB database is used
        import pymysql
    except ImportError:
        raise ConfigError(
            "MariaDB/MySQL databases need the PyMySQL driver: "
            "pip install 'dbguard-plugin[mariadb]'"
        ) from None
    return pymysql


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class MariaDB:
    suffix = ".sql"

    def __init__(self, params: ServerParams) -> None:
        self.params = params
        # scratch names carry the live database's hash: a cleanup for one database
        self._scratch = scratch_prefix(params.database)

    def connect(self, database: str | None = None) -> Any:
        """A new autocommit PyMySQL connection, or a DbGuardError without secrets."""
        pymysql = _pymysql()
        p = self.params
        timeout = int(p.query.get("connect_timeout", "10"))
        kwargs: dict[str, Any] = {
            "database": database or p.database, "autocommit": True, "charset": "utf8mb4",
            # PyMySQL bounds only the TCP connect by connect_timeout: a server that
            # accepts and never greets would hang every command, so the handshake is
            # bounded by the read and write timeouts, lifted once connected (below)
            "connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout,
            "host": p.host or "localhost", "port": p.port or 3306,
        }
        if p.user is not None:
            kwargs["user"] = p.user
        if p.password is not None:
            kwargs["password"] = p.password
        if "unix_socket" in p.query:
            kwargs["unix_socket"] = p.query["unix_socket"]
        try:
            conn = pymysql.connect(**kwargs)
        except pymysql.Error as exc:
            raise DbGuardError(
                f"{p.redacted}: cannot connect to MariaDB ({scrub(str(exc), p)}); "
                "check the URL and that the server is running"
            ) from None
        # Queries wait as long as they need (a GET_LOCK with its own timeout, a count
        # of a large table); only the connection had to be bounded.
        for name in ("_read_timeout", "_write_timeout"):
            if hasattr(conn, name):
                setattr(conn, name, None)
        return conn

    @staticmethod
    def query(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def _tables(self, conn: Any, database: str) -> list[str]:
        return [str(r[0]) for r in self.query(conn, _TABLES, (database,))]

    def _facts(self, conn: Any, database: str) -> LiveFacts:
        counts = {
            name: int(self.query(conn, f"SELECT count(*) FROM {quote(database)}."
                                 f"{quote(name)}")[0][0])
            for name in self._tables(conn, database)
        }
        return LiveFacts(counts, self._schema(conn, database))

    def live_facts(self) -> LiveFacts:
        conn = self.connect()
        try:
            self.query(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            facts = self._facts(conn, self.params.database)
            self.query(conn, "COMMIT")
            return facts
        finally:
            conn.close()

    # -- backup ------------------------------------------------------------------------

    def _dump_argv(self, tool: str, option_file: Path) -> list[str]:
        db = self.params.database
        return [
            tool, f"--defaults-extra-file={option_file}",  # must come first
            "--single-transaction", "--quick", "--skip-lock-tables", "--no-tablespaces",
            "--routines", "--triggers", "--default-character-set=utf8mb4",
            f"--ignore-table={db}.{HOLDERS_TABLE}", f"--ignore-table={db}.{RESTORES_TABLE}",
            "--", db,
        ]

    def dump(self, fd: int, compression: str, progress: Progress | None,
             started: Callable[[int], None] | None, *, plain: bool = False) -> DumpResult:
        """mariadb-dump's SQL text, compressed by dbguard's stream writer per
        *compression* unless *plain*."""
        if plain:
            compression = "none"
        tool = find_tool("mariadb-dump", _PACKAGE)
        conn = self.connect()
        try:
            version = str(self.query(conn, "SELECT VERSION()")[0][0])
            before = self._schema(conn, self.params.database)
            reader = DumpReader()
            with mariadb_option_file(self.params) as option_file:
                digests = stream_dump(self._dump_argv(tool, option_file), dict(_env()), fd,
                                      self.params, compression=compression,
                                      observer=reader.feed, progress=progress,
                                      started=started)
            tables = reader.close()
            if not reader.complete:
                raise VerificationError(f"{self.params.redacted}: mariadb-dump output ends "
                                        "without its completion line; the dump is cut short")
            after = self._schema(conn, self.params.database)
        finally:
            conn.close()
        if before != after:
            raise DbGuardError(f"{self.params.redacted}: the schema changed during the "
                               "backup (a migration?); back up again when it is done")
        return DumpResult(digests, compression, tables, before, version,
                          "mariadb-dump completion line and row counts")

    def _schema(self, conn: Any, database: str) -> str:
        # positions renumbered per table: a restore closes the gaps of dropped columns
        rows = self.query(conn, _COLUMNS, (database,))
        rows.sort(key=lambda r: (r[0], r[2]))
        numbered, last, n = [], None, 0
        for row in rows:
            n = n + 1 if row[0] == last else 1
            last = row[0]
            numbered.append((row[0], n, row[1], row[3], row[4]))
        return fingerprint(numbered)

    # -- verify ------------------------------------------------------------------------

    def check_new(self, path: Path, manifest: Manifest) -> list[str]:
        """Nothing more to do for a new backup: the stream was read as it was written
        (complete, rows counted), and its sha256 is of exactly the bytes written."""
        return []

    def verify_archive(self, path: Path, manifest: Manifest) -> list[str]:
        """The dump is complete and holds exactly the rows its manifest counted."""
        reader = DumpReader()
        try:
            for chunk in read_plain(path, manifest.compression):
                reader.feed(chunk)
        except (OSError, EOFError, ValueError) as exc:
            return [f"{path}: cannot read the dump ({exc})"]
        tables = reader.close()
        problems = []
        if not reader.complete:
            problems.append(f"{path}: the dump ends without mariadb-dump's completion line")
        if tables != manifest.tables:
            problems.append(f"{path}: the dump's row counts do not match the manifest")
        return problems

    # -- restore -----------------------------------------------------------------------

    def restore_archive(self, path: Path, manifest: Manifest, lock_timeout: float,
                        lease: LentLease, marker: str) -> None:
        """Load into a scratch database, check it there, swap it in with one RENAME on
        the lease's connection, *marker* moving in with the tables."""
        live_db = self.params.database
        tag = secrets.token_hex(4)
        new_db, old_db = f"{self._scratch}n_{tag}", f"{self._scratch}o_{tag}"
        conn = self.connect()
        try:
            charset = self.query(
                conn, "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (live_db,))[0]
            for name in (new_db, old_db):
                self.query(conn, f"CREATE DATABASE {quote(name)} CHARACTER SET "
                           f"{charset[0]} COLLATE {charset[1]}")
            try:
                self._load(path, manifest, new_db)
                loaded = self._facts(conn, new_db)
                problems = compare(manifest, loaded, f"scratch database {new_db}")
                if problems:
                    raise VerificationError("; ".join(problems))
                self.query(conn, f"CREATE TABLE {quote(new_db)}.{RESTORES_TABLE} "
                           "(token VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB")
                self.query(conn, f"INSERT INTO {quote(new_db)}.{RESTORES_TABLE} VALUES (%s)",
                           (marker,))
                reach("server-restore:replacing")
                self._swap(lease, live_db, new_db, old_db, lock_timeout)
            finally:
                for name in (new_db, old_db):
                    with contextlib.suppress(Exception):
                        self.query(conn, f"DROP DATABASE IF EXISTS {quote(name)}")
        finally:
            conn.close()

    def _load(self, path: Path, manifest: Manifest, database: str) -> None:
        tool = find_tool("mariadb", _PACKAGE)
        with mariadb_option_file(self.params) as option_file:
            run_tool([tool, f"--defaults-extra-file={option_file}", "--batch",
                      "--default-character-set=utf8mb4", f"--database={database}"],
                     dict(_env()), self.params, feed=path, compression=manifest.compression)

    def _swap(self, lease: LentLease, live_db: str, new_db: str, old_db: str,
              lock_timeout: float) -> None:
        pymysql = _pymysql()
        with lease.pinned() as conn:
            try:
                self._rename(conn, live_db, new_db, old_db, lock_timeout)
            except pymysql.Error as exc:
                error = scrub(str(exc), self.params)
                if not conn.open:  # the server may still have finished it
                    raise OutcomeUnknown(f"the lease connection was lost during the swap "
                                         f"({error})") from None
                raise ToolError(f"swapping the restored tables in failed ({error}); the "
                                "database is unchanged") from None

    def _rename(self, conn: Any, live_db: str, new_db: str, old_db: str,
                lock_timeout: float) -> None:
        live, new = set(self._tables(conn, live_db)), set(self._tables(conn, new_db))
        pairs = [f"{quote(live_db)}.{quote(t)} TO {quote(old_db)}.{quote(t)}"
                 for t in sorted(live)]
        pairs += [f"{quote(new_db)}.{quote(t)} TO {quote(live_db)}.{quote(t)}"
                  for t in sorted(new)]
        if self.query(conn, "SELECT count(*) FROM information_schema.TABLES WHERE "
                      "TABLE_SCHEMA = %s AND TABLE_NAME = %s", (live_db, RESTORES_TABLE))[0][0]:
            pairs.append(f"{quote(live_db)}.{RESTORES_TABLE} TO {quote(old_db)}.{RESTORES_TABLE}")
        pairs.append(f"{quote(new_db)}.{RESTORES_TABLE} TO {quote(live_db)}.{RESTORES_TABLE}")
        self.query(conn, f"SET SESSION lock_wait_timeout = {max(1, int(lock_timeout))}")
        try:
            # ONE statement: MariaDB renames every pair or none of them
            self.query(conn, "RENAME TABLE " + ", ".join(pairs))
        finally:
            if conn.open:  # the lease's connection lives on: its other statements must
                with contextlib.suppress(_pymysql().Error):  # not wait that long
                    self.query(conn, "SET SESSION lock_wait_timeout = DEFAULT")

    def committed(self, marker: str) -> bool:
        """Whether the swap tagged *marker* happened: its marker table moved in with it.

        Final whenever the lease is free or ours: the RENAME ran on the lease's own
        connection, whose locks outlive any statement still running on it.
        """
        conn = self.connect()
        try:
            return bool(self.query(
                conn, "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s", (self.params.database, RESTORES_TABLE))[0][0]
                and self.query(conn, f"SELECT count(*) FROM {RESTORES_TABLE} WHERE token = %s",
                               (marker,))[0][0])
        finally:
            conn.close()

    def forget(self, marker: str) -> None:
        """Nothing: the marker table holds one row, swapped out by the next restore."""

    def cleanup(self) -> None:
        """Drop scratch databases a killed restore left (never the live database)."""
        conn = self.connect()
        try:
            rows = self.query(conn, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                              "WHERE SCHEMA_NAME LIKE %s",
                              (self._scratch.replace("_", "\\_") + "%",))
            for (name,) in rows:
                if str(name) != self.params.database:
                    self.query(conn, f"DROP DATABASE IF EXISTS {quote(str(name))}")
        finally:
            conn.close()


def _env() -> dict[str, str]:
    # a MYSQL_PWD or MYSQL_HOST of the caller's shell must not override the option file
    return {k: v for k, v in os.environ.items() if not k.startswith("MYSQL_")}
