"""PostgreSQL and MariaDB/MySQL databases: backups, restores and the lease on the server.

The rest of dbguard asks this package for the dialect of a server URL; everything
specific to one server lives in its own module (:mod:`.postgresql`, :mod:`.mariadb`).
"""

from __future__ import annotations

from dbguard_plugin.engines.server.dialect import Dialect
from dbguard_plugin.engines.server.params import POSTGRESQL, ServerParams, params_for, server_kind
from dbguard_plugin.location import DatabaseLocation

__all__ = ["dialect_for", "dialect_for_params", "is_server", "server_kind"]


def is_server(location: DatabaseLocation) -> bool:
    return location.sqlite_path is None and server_kind(location) is not None


def dialect_for_params(params: ServerParams) -> Dialect:
    if params.kind == POSTGRESQL:
        from dbguard_plugin.engines.server.postgresql import PostgreSQL

        return PostgreSQL(params)
    from dbguard_plugin.engines.server.mariadb import MariaDB

    return MariaDB(params)


def dialect_for(location: DatabaseLocation) -> Dialect:
    """The dialect of a server database; ConfigError for a backend dbguard does not know."""
    return dialect_for_params(params_for(location))
