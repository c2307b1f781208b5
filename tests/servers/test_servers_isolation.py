"""Tests share one server: a test's teardown must touch only what belongs to its own
database. It used to drop every ``dbguard_r_%`` scratch database on the server, so a
restore running in another test run on the same server (a second developer, CI beside
a developer) failed with "Unknown database 'dbguard_r_...'"."""

from __future__ import annotations

from typing import Any

import pytest

from dbguard_plugin.engines.server.mariadb import scratch_prefix

pytestmark = pytest.mark.servers


def _schemas(db: Any) -> set[str]:
    return {str(r[0]) for r in db.run_on_server("SELECT SCHEMA_NAME FROM "
                                                "information_schema.SCHEMATA")}


def test_a_teardown_drops_only_its_own_scratch_databases(make_server_db) -> None:
    mine, theirs = make_server_db("mariadb"), make_server_db("mariadb")
    for db in (mine, theirs):
        mine.run_on_server(f"CREATE DATABASE `{scratch_prefix(db.name)}n_test`")
    mine.drop()
    left = _schemas(theirs)
    assert f"{scratch_prefix(mine.name)}n_test" not in left
    assert f"{scratch_prefix(theirs.name)}n_test" in left, "another run's restore lost"
    assert mine.name not in left
