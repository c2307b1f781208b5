"""Which dialect serves a server database: PostgreSQL or MariaDB/MySQL."""

from __future__ import annotations

from dbguard_plugin.engines.server.dialect import Dialect
from dbguard_plugin.engines.server.mariadb import MariaDB
from dbguard_plugin.engines.server.params import POSTGRESQL, ServerParams, params_for
from dbguard_plugin.engines.server.postgresql import PostgreSQL
from dbguard_plugin.location import DatabaseLocation


def dialect_for_params(params: ServerParams) -> Dialect:
    if params.kind == POSTGRESQL:
        return PostgreSQL(params)
    return MariaDB(params)


def dialect_for(location: DatabaseLocation) -> Dialect:
    """The dialect of a server database; ConfigError for a backend dbguard does not know."""
    return dialect_for_params(params_for(location))
