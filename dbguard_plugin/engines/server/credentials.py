"""Handing the password to the server's tools without it ever reaching argv.

PostgreSQL tools read every connection setting from ``PG*`` environment variables, so
their command line names no host, user, database or password at all. MariaDB tools get
a ``--defaults-extra-file`` (0600, in a 0700 directory, removed afterwards): the
``MYSQL_PWD`` variable works too but is documented as insecure and may be dropped.
Anything a tool prints goes through :func:`scrub` before it reaches a message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dbguard_plugin.engines.server.params import ServerParams
from dbguard_plugin.files import open_private
from dbguard_plugin.location import redact

#: libpq settings the URL's query string may carry, and the variables that hold them.
_PG_QUERY_ENV = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


def pg_env(params: ServerParams, **extra: str) -> dict[str, str]:
    """The environment for pg_dump / pg_restore / psql: every setting, no argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": params.host, "PGPORT": str(params.port) if params.port else None,
        "PGUSER": params.user, "PGPASSWORD": params.password, "PGDATABASE": params.database,
        "PGAPPNAME": "dbguard",
    }
    for key, name in _PG_QUERY_ENV.items():
        if key in params.query:
            values[name] = params.query[key]
    env.update({k: v for k, v in values.items() if v is not None})
    env.update(extra)
    return env


def _option_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def mariadb_option_file(params: ServerParams) -> Iterator[Path]:
    """A private ``[client]`` option file for mariadb / mariadb-dump, removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="dbguard-"))  # mkdtemp makes it 0700
    path = directory / "client.cnf"
    try:
        lines = ["[client]"]
        if params.host:
            lines.append(f"host={_option_value(params.host)}")
            # "localhost" means the socket to these tools; an address means TCP
            lines.append("protocol=tcp" if params.host != "localhost" else "protocol=socket")
        if params.port:
            lines.append(f"port={params.port}")
        if params.user:
            lines.append(f"user={_option_value(params.user)}")
        if params.password is not None:
            lines.append(f"password={_option_value(params.password)}")
        socket = params.query.get("unix_socket")
        if socket:
            lines.append(f"socket={_option_value(socket)}")
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def scrub(text: str, params: ServerParams) -> str:
    """*text* (a tool's stderr, a driver's error) without the password in any form."""
    secrets = [params.password, *(v for k, v in params.query.items()
                                   if redact(f"?{k}=x") != f"?{k}=x")]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text).strip()
