"""Connection parameters of a server database, taken from its SQLAlchemy URL.

The driver named in the URL (``+psycopg2``, ``+mysqldb``, ...) is the host's business:
dbguard only needs where the server is and who to log in as, and connects with its own
driver (psycopg 3 for PostgreSQL, PyMySQL for MariaDB/MySQL) and the server's own tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import DatabaseLocation

POSTGRESQL = "postgresql"
MARIADB = "mariadb"
_KINDS = {"postgresql": POSTGRESQL, "mysql": MARIADB, "mariadb": MARIADB}


def server_kind(location: DatabaseLocation) -> str | None:
    """``postgresql``, ``mariadb`` or None (not a server database dbguard knows)."""
    return _KINDS.get(location.backend)


@dataclass(frozen=True)
class ServerParams:
    """Where the server is and who logs in. ``repr`` never shows the password."""

    kind: str
    database: str
    redacted: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    query: Mapping[str, str] = field(default_factory=dict)


def params_for(location: DatabaseLocation) -> ServerParams:
    kind = server_kind(location)
    if kind is None:
        raise ConfigError(
            f"{location.redacted}: dbguard supports sqlite, postgresql and mysql/mariadb "
            f"databases, not {location.backend}"
        )
    url = location.url
    if not url.database:
        raise ConfigError(f"{location.redacted}: the URL names no database; add /dbname")
    query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
    return ServerParams(
        kind=kind, database=url.database, redacted=location.redacted,
        host=url.host or None, port=url.port, user=url.username or None,
        password=url.password if url.password is not None else None, query=query,
    )
