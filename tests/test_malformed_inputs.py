"""Malformed input never crashes dbguard: it gets a clear answer and a documented code.

The rule, per kind of input (every case generated, see tests/malformed.py):

* a damaged manifest among good ones (a wrong-typed, out-of-range or missing field, bad
  JSON, too deep, not UTF-8): ``backups``, ``prune`` and ``doctor`` exit 0 and list it
  as damaged (``DAMAGED <file>: <why>``), ``verify --all`` exits 4 listing it, and
  ``restore ID`` exits 4 naming the file; it is never deleted;
* a bad configuration file (a control character in a path or URL key, a wrong type, a
  document nested too deeply, not UTF-8, a directory, bad syntax): exit 2 naming the
  file (and the key);
* a malformed ``--db`` URL: exit 2 naming the URL;
* a malformed backup id: exit 2, ``'<id>' is not a backup id``;
* a malformed profile name: exit 2, ``'<name>' is not a valid profile name``.

Never a traceback. The 200 cases of each kind run in this process through click's
runner (an exception escaping the command fails the test); a few of each run as real
processes here, and all of them in tests/torture/test_malformed_cli.py.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runs import Cli
from malformed import KINDS, World, cases, finish, make_world, problems

from dbguard_plugin import Guard
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.errors import VerificationError
from dbguard_plugin.settings.config import Config

PER_KIND = 200


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_malformed_input_in_process(
    kind: str, world: World, child_env: Callable[..., dict[str, str]], run_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(world.root)  # a relative path in a bad URL stays in tmp
    env = child_env()
    failures: list[str] = []
    for case in cases(kind, world, PER_KIND):
        result = run_cli(*case.args, env=env, in_process=True, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            failures.append(f"{case}: raised {result.exception!r}")
        else:
            failures += problems(case, result.exit_code, result.stdout, result.stderr)
        finish(case)
    assert not failures, f"{len(failures)} of {PER_KIND}:\n" + "\n".join(failures[:5])


@pytest.mark.parametrize("kind", KINDS)
def test_generated_malformed_input_in_real_processes(
    kind: str, world: World, run_cli: Cli
) -> None:
    for case in cases(kind, world, 3, seed=7):
        result = run_cli(*case.args)
        assert not problems(case, result.returncode, result.stdout, result.stderr)
        finish(case)


# -- manifest validation, field by field -------------------------------------------------------

GOOD: dict[str, Any] = {
    "id": "20250101T000000000Z-manual", "created": "2025-01-01T00:00:00.000Z",
    "created_ts": 1735689600.0, "reason": "manual", "file": "20250101T000000000Z-manual.sqlite",
    "size": 8192, "sha256": "ab" * 32, "compression": "none", "raw_size": 8192,
    "raw_sha256": "ab" * 32, "backend": "sqlite", "source": "sqlite:////bot.sqlite",
    "tables": {"trades": 3}, "trading_state": {"open": 0}, "verified": True, "format": 1,
}

WRONG: dict[str, list[Any]] = {
    "id": [None, 5, "", "../etc", "a/b", "x" * 200, ".hidden"],
    "created": [None, 1, ["2025"], "a\x1bb"],
    "created_ts": [None, "1735689600", 0, -1, math.nan, math.inf, True, 10**400],
    "reason": [None, 3, {}],
    "file": [None, 3, []],
    "size": [None, "8192", -1, 1.5, False],
    "sha256": [None, "", "ab", "zz" * 32, "ab" * 33, 7],
    "compression": [None, "lz4", 0, "Gzip"],
    "raw_size": [None, -1, "1"],
    "raw_sha256": [None, "abc", 1],
    "backend": [None, "", "sq lite", 1],
    "source": [None, 1, "a\x00b"],
    "page_size": [None, -1, "4096", 4096.0],
    "user_version": [None, "1", 1.5],
    "tables": [None, [], {"t": -1}, {"t": "3"}, {"t": True}, {"t": 1.5}],
    "trading_state": [None, [], "x"],
    "duration_s": [None, -1, "0.1", math.nan],
    "verified": [None, "true", 1],
    "format": [None, 0, "1", True],
}


def test_a_good_manifest_reads_back() -> None:
    manifest = Manifest.from_dict(GOOD)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    assert Manifest.from_dict({**GOOD, "created_ts": 1735689600}).created_ts == 1735689600.0
    assert Manifest.from_dict({**GOOD, "unknown_future_key": [1]}) == manifest


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in WRONG.items() for v in vs])
def test_each_field_wrong_in_each_way_is_refused_naming_it(key: str, value: Any) -> None:
    with pytest.raises(VerificationError, match=f"m.json: manifest field {key} = .* is "
                       "invalid: expected "):
        Manifest.from_dict({**GOOD, key: value}, "m.json")


@pytest.mark.parametrize("key", ["id", "created_ts", "sha256", "size", "file", "source"])
def test_a_missing_required_field_is_refused_naming_it(key: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != key}
    with pytest.raises(VerificationError, match=f"no field '{key}'"):
        Manifest.from_dict(body, "m.json")


@pytest.mark.parametrize("text", [b"[1]", b"null", b"{", b"[" * 100_000, b"{\"id\": \"\xff\"}"])
def test_unreadable_manifest_files_are_refused_naming_the_file(
    tmp_path: Path, text: bytes
) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(text)
    with pytest.raises(VerificationError, match=str(path)):
        Manifest.read(path)


# -- the bot path -------------------------------------------------------------------------------


def _damage_one(guard: Guard, **fields: Any) -> Path:
    """A second backup whose manifest then gets *fields* written over it."""
    manifest = guard.backup()
    path = guard.catalog.manifest_path(manifest.id)
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return path


@pytest.mark.parametrize("fields", [{"created_ts": None}, {"created_ts": "yesterday"},
                                    {"id": 12}, {"tables": {"t": "x"}}])
def test_a_production_bot_trades_with_a_damaged_manifest_in_its_catalog(
    db_path: Path, db_url: str, make_guard: Callable[..., Guard], fields: dict[str, Any]
) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    setup = make_guard(Config(db_url=db_url, environment="production"))
    damaged = _damage_one(setup, **fields)
    setup.close()

    bot = make_guard(Config(db_url=db_url, environment="production"))
    bot.start_session("S-1")
    assert bot.paused is None
    assert bot.admit_order() is True
    assert [d.file for d in bot.catalog.damaged()] == [damaged.name]
    assert damaged.name not in [f"{m.id}.json" for m in bot.catalog.manifests()]
    bot.prune()
    assert damaged.exists()
    # cleanup keeps the data file of a damaged manifest, for an operator to look at
    assert damaged.with_suffix(".sqlite").exists()
    bot.end_session()


def test_damaged_rows_in_backups_json_carry_why(world: World, run_cli: Cli) -> None:
    name = "20240101T000000001Z-manual.json"
    (world.catalog / name).write_text(json.dumps({**world.manifest, "created_ts": None}))
    result = run_cli("backups", "--json", "--db", world.db_url, in_process=True,
                     catch_exceptions=True)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    bad = [r for r in rows if "damaged" in r]
    assert [(r["id"], r["verified"]) for r in bad] == [(name[:-5], False)]
    assert "created_ts = None is invalid" in bad[0]["damaged"]
    assert all("damaged" not in r for r in rows if r not in bad)
