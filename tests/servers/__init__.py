"""Tests against real PostgreSQL and MariaDB servers (a package: its conftest must not
shadow tests/conftest.py for modules that import from it)."""
