"""PostgreSQL and MariaDB/MySQL databases: backups, restores and the lease on the server.

The rest of dbguard reaches this engine through :mod:`dbguard_plugin.engines`, which
imports it only for a server database. :mod:`.dialects` names the dialect of a server
URL; everything specific to one server lives in its own module (:mod:`.postgresql`,
:mod:`.mariadb`).
"""
