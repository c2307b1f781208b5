"""Server tests skip with a reason where no server answers, and fail when CI says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.parametrize(("require", "outcome"), [(None, "1 skipped"), ("1", "1 error")])
def test_an_unreachable_server_skips_or_fails(child_env, tmp_path, require, outcome):
    env = child_env(DBGUARD_TEST_POSTGRESQL_URL="postgresql://postgres@127.0.0.1:9/test",
                    DBGUARD_REQUIRE_SERVERS=require)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
         f"--rootdir={HERE.parent.parent}",
         f"{HERE / 'test_servers_backup.py'}::test_rollback_puts_the_safety_backup_back"
         "[postgresql]"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )
    assert outcome in result.stdout, result.stdout + result.stderr
    assert (result.returncode != 0) == (require == "1")
    assert "no postgresql server at postgresql://postgres@127.0.0.1:9/test" in result.stdout
