"""`dbguard verify` on server backups (needs verify.patch applied)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.servers


def test_the_cli_verifies_server_backups(server_db, run_cli):
    server_db.create_tables("fills", "ledger")
    made = run_cli("backup", "--json", "--db", server_db.url)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    checked = run_cli("verify", backup_id, "--db", server_db.url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"ok   {backup_id}" in checked.stdout
