"""Server fixtures: each test gets its own database on the real local servers.

``server_url`` (parametrized over PostgreSQL and MariaDB), ``pg_url`` and
``mariadb_url`` create ``dbguard_t_<random>`` on the server and drop it afterwards,
with every connection to it. Where a server, its client tools or its driver is
missing the test is skipped with the reason, unless ``DBGUARD_REQUIRE_SERVERS=1``
(set by ``.ci/run``), which makes it fail instead.

Admin URLs: ``DBGUARD_TEST_POSTGRESQL_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and ``DBGUARD_TEST_MARIADB_URL``
(default ``mariadb://root@127.0.0.1:3306/test``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

from dbguard_plugin.engines.server.mariadb import scratch_prefix

REQUIRE_ENV = "DBGUARD_REQUIRE_SERVERS"
ADMIN_URLS = {
    "postgresql": os.environ.get("DBGUARD_TEST_POSTGRESQL_URL",
                                 "postgresql://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("DBGUARD_TEST_MARIADB_URL",
                              "mariadb://root@127.0.0.1:3306/test"),
}
TOOLS = {"postgresql": ("pg_dump", "pg_restore", "psql"),
         "mariadb": ("mariadb-dump", "mariadb")}


def unavailable(reason: str) -> None:
    """Skip the test with *reason*, or fail it when CI requires the servers."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: server tests must run here)",
                    pytrace=False)
    pytest.skip(reason)


def admin_connect(kind: str, url: URL, database: str | None = None) -> Any:
    """A driver connection as the admin user, or skip-or-fail with the reason."""
    try:
        if kind == "postgresql":
            import psycopg

            return psycopg.connect(
                host=url.host, port=url.port or 5432, user=url.username,
                password=url.password, dbname=database or url.database, autocommit=True,
                connect_timeout=5,
            )
        import pymysql

        return pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                               password=url.password or "", database=database or url.database,
                               autocommit=True, connect_timeout=5)
    except ImportError as exc:
        unavailable(f"the {kind} driver is not installed ({exc}); "
                    f"pip install 'dbguard-plugin[{kind}]'")
    except Exception as exc:
        unavailable(f"no {kind} server at {url.render_as_string(hide_password=True)} ({exc})")
    raise AssertionError("unreachable")


def execute(conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


#: The tables the server tests write: name -> (PostgreSQL, MariaDB) statement.
TABLES = {
    "fills": ("CREATE TABLE fills (id integer PRIMARY KEY, qty numeric(20, 8))",
              "CREATE TABLE fills (id INT PRIMARY KEY, qty DECIMAL(20, 8)) ENGINE=InnoDB"),
    "ledger": ("CREATE TABLE ledger (fill_id integer PRIMARY KEY REFERENCES fills(id), "
               "note text)",
               "CREATE TABLE ledger (fill_id INT PRIMARY KEY, note TEXT, "
               "FOREIGN KEY (fill_id) REFERENCES fills(id)) ENGINE=InnoDB"),
    "orders": ("CREATE TABLE orders (id varchar(32) PRIMARY KEY, state varchar(16))",
               "CREATE TABLE orders (id VARCHAR(32) PRIMARY KEY, state VARCHAR(16)) "
               "ENGINE=InnoDB"),
}


class ServerDb:
    """One test's database: its URL (dbguard's view) and admin connections to it."""

    def __init__(self, kind: str, admin: URL, name: str) -> None:
        self.kind = kind
        self.admin = admin
        self.name = name
        driver = "postgresql+psycopg" if kind == "postgresql" else "mariadb+pymysql"
        self.url_obj = admin.set(drivername=driver, database=name)
        self.url = self.url_obj.render_as_string(hide_password=False)
        self._conns: list[Any] = []

    def with_user(self, user: str, password: str) -> str:
        return self.url_obj.set(username=user, password=password).render_as_string(
            hide_password=False)

    def connect(self) -> Any:
        conn = admin_connect(self.kind, self.admin, self.name)
        self._conns.append(conn)
        return conn

    def run(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return execute(conn, sql, args)
        finally:
            conn.close()

    def create_tables(self, *names: str) -> None:
        """The named :data:`TABLES`, in this order (a foreign key's table first)."""
        for name in names:
            self.run(TABLES[name][0 if self.kind == "postgresql" else 1])

    def run_on_server(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """*sql* as the admin user on the server's admin database, not on this one."""
        conn = admin_connect(self.kind, self.admin)
        try:
            return execute(conn, sql, args)
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()

    def drop(self) -> None:
        """Drop this database, and only its own scratch databases, with every connection."""
        self.close()
        if self.kind == "postgresql":
            self.run_on_server(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            return
        # Only this test's own scratch databases: dropping every dbguard_r_% one also
        # dropped the scratch database of a restore running in another test run on the
        # same server ("Unknown database 'dbguard_r_...'" there).
        prefix = scratch_prefix(self.name).replace("_", "\\_")
        for (name,) in self.run_on_server("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"
                                          " WHERE SCHEMA_NAME LIKE %s", (prefix + "%",)):
            self.run_on_server(f"DROP DATABASE IF EXISTS `{name}`")  # a failed test's scratch
        self.run_on_server(f"DROP DATABASE IF EXISTS {self.name}")


def _create(kind: str) -> ServerDb:
    for tool in TOOLS[kind]:
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    admin = make_url(ADMIN_URLS[kind])
    name = f"dbguard_t_{secrets.token_hex(5)}"
    conn = admin_connect(kind, admin)
    try:
        execute(conn, f"CREATE DATABASE {name}")
    finally:
        conn.close()
    return ServerDb(kind, admin, name)


@pytest.fixture
def make_server_db() -> Iterator[Callable[[str], ServerDb]]:
    made: list[ServerDb] = []

    def make(kind: str) -> ServerDb:
        db = _create(kind)
        made.append(db)
        return db

    yield make
    for db in made:
        db.drop()


@pytest.fixture(params=["postgresql", "mariadb"])
def server_db(request: pytest.FixtureRequest,
              make_server_db: Callable[[str], ServerDb]) -> ServerDb:
    return make_server_db(request.param)


@pytest.fixture
def pg_db(make_server_db: Callable[[str], ServerDb]) -> ServerDb:
    return make_server_db("postgresql")


@pytest.fixture
def mariadb_db(make_server_db: Callable[[str], ServerDb]) -> ServerDb:
    return make_server_db("mariadb")


@pytest.fixture
def server_guards() -> Iterator[Callable[..., Any]]:
    """Guards on server URLs in this process; closed (connections and locks) at teardown."""
    from dbguard_plugin import Guard

    guards: list[Guard] = []

    def make(url: str, **settings: Any) -> Guard:
        from dbguard_plugin.settings.config import Config

        config = Config.from_mapping(settings) if settings else None
        guard = Guard(config, db_url=url)
        guards.append(guard)
        return guard

    yield make
    for guard in guards:
        guard.close()
