"""``dbguard demo``: a paper bot and a separate operator process on a throw-away file."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing


def test_demo_transcript_shows_a_veto_then_an_allowed_restore(run_cli, child_env, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run_cli("demo", env=child_env(TMPDIR=str(scratch)))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    vetoed = out.index("dbguard check restore  ->  exit 3: vetoed")
    allowed = out.index("dbguard check restore  ->  exit 0: allowed")
    assert vetoed < allowed
    veto_block = out[vetoed:allowed]
    assert re.search(r"2 orders in flight in pid \d+: 1 \(BTC/USDT buy, submitted\), "
                     r"2 \(ETH/USDT sell, submitted\)", veto_block), veto_block
    assert "a trading session is active" in veto_block
    assert out.index("order 1 filled") > vetoed
    assert out.index("order 2 filled") < allowed
    assert "as it should" in out
    assert list(scratch.iterdir()) == [], "the demo left its throw-away directory behind"


def test_demo_json(run_cli, tmp_path):
    db = tmp_path / "demo.sqlite"
    result = run_cli("demo", "--json", "--db", f"sqlite:///{db}")
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["ok"] is True
    checks = [step for step in body["steps"] if step["who"] == "operator"]
    assert [step["exit_code"] for step in checks] == [3, 0]
    first = checks[0]["verdict"]
    orders = [r for r in first["reasons"] if r["code"] == "orders-in-flight"]
    assert orders[0]["details"]["orders"] == ["1 (BTC/USDT buy, submitted)",
                                              "2 (ETH/USDT sell, submitted)"]
    assert checks[1]["verdict"]["allowed"] is True
    # The paper orders really went into the given SQLite file, and it was kept.
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, status FROM orders ORDER BY id").fetchall()
    assert rows == [("1", "closed"), ("2", "closed")]


def test_demo_refuses_an_existing_database(run_cli, tmp_path):
    db = tmp_path / "precious.sqlite"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE trades (id INTEGER)")
        conn.commit()
    before = db.read_bytes()
    result = run_cli("demo", "--db", f"sqlite:///{db}")
    assert result.returncode == 2
    assert "new SQLite file" in result.stderr
    assert db.read_bytes() == before
    assert not db.with_name(db.name + ".dbguard").exists()
