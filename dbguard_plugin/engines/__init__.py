"""How one kind of database is backed up, verified, previewed and leased.

``engines.sqlite`` for the embedded default, ``engines.server`` for PostgreSQL and
MariaDB. An engine imports catalog and the shared values, never the guard.
"""
