"""Generated malformed input for the real ``dbguard`` CLI, shared by
tests/test_malformed_inputs.py (in-process, plus a few real processes) and
tests/torture/test_malformed_cli.py (every case in its own process).

Each generator draws from a seeded :class:`random.Random`, so a failing case is found
again by its kind and index. A :class:`Case` carries the argv, the exit codes allowed
and the text the output must hold (the input named back to the operator).
"""

from __future__ import annotations

import json
import random
import sqlite3
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbguard_plugin import Guard
from dbguard_plugin.settings.config import Config

KINDS = ("manifest", "config", "url", "backup_id", "profile_name")
#: Control characters, NUL left out: no process argv can carry one.
_CONTROL = [chr(c) for c in (*range(1, 32), 127)]


@dataclass
class World:
    """A database with one good backup, and the directory generated files go to."""

    root: Path
    db_url: str
    catalog: Path
    manifest: dict[str, Any]


@dataclass
class Case:
    kind: str
    index: int
    args: list[str]
    codes: tuple[int, ...]
    #: Texts the combined output must hold: the bad input named back.
    names: list[str] = field(default_factory=list)
    #: Files the command must leave in place (a damaged manifest is never deleted).
    kept: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.kind}[{self.index}] {self.args!r}"


def make_world(root: Path) -> World:
    db = root / "bot.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO trades (amount) VALUES (1.5)")
    conn.commit()
    conn.close()
    url = f"sqlite:///{db}"
    guard = Guard(Config(db_url=url, keep_last=50))
    try:
        good = guard.backup()
        catalog = guard.catalog.directory
    finally:
        guard.close()
    body = json.loads((catalog / f"{good.id}.json").read_text(encoding="utf-8"))
    return World(root, url, catalog, body)


def _junk(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def _insert(rng: random.Random, text: str, chars: list[str] | str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(chars) + text[at:]


# -- manifests ------------------------------------------------------------------------------

_NOT_TEXT: list[Any] = [None, 7, -1.5, True, [], ["x"], {"a": 1}]
_NOT_WHOLE: list[Any] = [None, "12", 1.5, True, [], {"n": 1}, float("nan")]
_BAD_VALUES: dict[str, list[Any]] = {
    "id": [*_NOT_TEXT, "", "../x", "a/b", "-lead", "x" * 200, "a\x1bb"],
    "created": [*_NOT_TEXT, "2025\n01", "x" * 100],
    "created_ts": [None, "1700000000", 0, -5, float("nan"), float("inf"), True, [], 10**400],
    "reason": [*_NOT_TEXT, "man\x00ual", "r" * 100],
    "file": [*_NOT_TEXT, "../../etc/passwd", "other.sqlite"],
    "size": [*_NOT_WHOLE, -1],
    "sha256": [*_NOT_TEXT, "", "abc", "g" * 64, "0" * 63, "0" * 65],
    "compression": [*_NOT_TEXT, "lz4", "GZIP", ""],
    "raw_size": [*_NOT_WHOLE, -3],
    "raw_sha256": [*_NOT_TEXT, "xyz", "0" * 10],
    "backend": [*_NOT_TEXT, "", "SQL ite", "a\nb"],
    "source": [*_NOT_TEXT, "sqlite:////x\x00y"],
    "page_size": [*_NOT_WHOLE, -4096],
    "page_count": [*_NOT_WHOLE, -1],
    "user_version": _NOT_WHOLE,
    "tables": [None, [], "t", {"t": -1}, {"t": "1"}, {"t": True}, {"t": 1.5}],
    "trading_state": [None, [], "open", 3],
    "duration_s": [None, "1", -0.5, float("inf"), True],
    "verified": [None, "yes", 1, 0, []],
    "check": [*_NOT_TEXT, "c" * 300],
    "format": [None, 0, "1", 1.0, True],
}
_REQUIRED = ("id", "created", "created_ts", "reason", "file", "size", "sha256",
             "compression", "raw_size", "raw_sha256", "backend", "source")


def _damaged_text(rng: random.Random, world: World, backup_id: str) -> bytes:
    """The text of one damaged manifest for *backup_id*: a bad field, a missing one,
    or no JSON object at all."""
    body = {**world.manifest, "id": backup_id, "file": f"{backup_id}.sqlite"}
    roll = rng.random()
    if roll < 0.7:
        key = rng.choice(sorted(_BAD_VALUES))
        body[key] = rng.choice(_BAD_VALUES[key])
    elif roll < 0.8:
        del body[rng.choice(_REQUIRED)]
    elif roll < 0.85:
        return json.dumps(body).encode()[: rng.randrange(1, 200)]
    elif roll < 0.9:
        depth = rng.randrange(2_000, 60_000)
        return b"[" * depth + b"]" * depth
    elif roll < 0.95:
        raw = bytearray(json.dumps(body).encode())
        raw.insert(rng.randrange(2, len(raw) - 2), rng.randrange(0x80, 0x100))
        return bytes(raw)
    else:
        return json.dumps(rng.choice([[1, 2], "text", 3, None, [body]])).encode()
    return json.dumps(body).encode()  # NaN and Infinity as JSON spells them in Python


def manifest_case(rng: random.Random, world: World, index: int) -> Case:
    backup_id = f"20240101T{index:09d}Z-manual"
    name = f"{backup_id}.json"
    path = world.catalog / name
    path.write_bytes(_damaged_text(rng, world, backup_id))
    db = ["--db", world.db_url]
    command, codes, shown = [
        (["backups", *db], (0,), f"DAMAGED {name}"),
        (["backups", "--json", *db], (0,), name),
        (["verify", "--all", *db], (4,), f"DAMAGED {name}"),
        (["restore", backup_id, "--yes", *db], (4,), str(path)),
        (["prune", *db], (0,), "deleted 0 backups"),
        (["doctor", *db], (0,), name),
    ][index % 6]
    return Case("manifest", index, command, codes, [shown], kept=[path])


# -- configs --------------------------------------------------------------------------------

_PATH_KEYS = ("db_url", "state_dir", "backup_dir", "audit_log")
#: Values no validator accepts for any key.
_WRONG_EVERYWHERE: list[Any] = [[1, 2], {"zz": 1}, float("inf"), -7.5, 10**30]
_KEYS = ("enabled", "db_url", "environment", "state_dir", "session_vetoes",
         "maintenance_wait", "audit_log", "backup_dir", "backup_on_session_start",
         "backup_on_session_end", "backup_interval", "require_backup_before_session",
         "compression", "backup_method", "keep_last", "keep_daily", "keep_weekly",
         "busy_timeout", "restore_check", "open_orders", "open_trades", "storage",
         "keep_monthly", "max_age_days")


def _config_body(rng: random.Random, world: World) -> tuple[Any, str | None]:
    """A config document with one bad setting, and the key the error must name."""
    section: dict[str, Any] = {"db_url": world.db_url}
    roll = rng.random()
    if roll < 0.4:
        key = rng.choice(_PATH_KEYS)
        good = world.db_url if key == "db_url" else str(world.root / f"d-{_junk(rng)}")
        section[key] = _insert(rng, good, ["\x00", *_CONTROL])
        return {"dbguard": section}, f"dbguard.{key}"
    if roll < 0.8:
        key = rng.choice(_KEYS)
        section[key] = rng.choice(_WRONG_EVERYWHERE)
        return {"dbguard": section}, f"dbguard.{key}"
    if roll < 0.9:
        key = f"{_junk(rng, 3)}_{_junk(rng)}"
        section[key] = 1
        return {"dbguard": section}, "unknown key"
    return {"db_url": rng.choice([7, None]), "dbguard": rng.choice([[], "x", 5])}, "dbguard"


def config_case(rng: random.Random, world: World, index: int) -> Case:
    suffix = rng.choice([".json", ".json", ".toml"])
    path = world.root / f"cfg-{index}{suffix}"
    roll = rng.random()
    named: str | None = None
    if roll < 0.55:
        document, named = _config_body(rng, world)
        if suffix == ".toml":
            # TOML has no null and its own syntax: the same settings written as JSON text
            # in a .json file keep the case a JSON one
            path = path.with_suffix(".json")
        path.write_text(json.dumps(document), encoding="utf-8")
    elif roll < 0.7:
        depth = rng.randrange(1_000, 80_000)
        text = "[" * depth + "]" * depth
        path.write_text(f"a = {text}\n" if suffix == ".toml" else text, encoding="utf-8")
    elif roll < 0.8:
        raw = bytearray(json.dumps({"dbguard": {"db_url": world.db_url}}).encode())
        raw.insert(rng.randrange(14, len(raw) - 3), rng.randrange(0x80, 0x100))
        path.write_bytes(bytes(raw))
    elif roll < 0.85:
        path.mkdir()
    else:
        text = json.dumps({"dbguard": {"db_url": world.db_url, "keep_last": 3}})
        cut = text[: rng.randrange(1, len(text) - 1)]
        path.write_text(cut + ("]" if suffix == ".toml" else ""), encoding="utf-8")
    command = rng.choice([["backups"], ["status"], ["backup"]])
    names = [str(path)] + ([named] if named else [])
    return Case("config", index, [*command, "--config", str(path)], (2,), names)


# -- URLs -----------------------------------------------------------------------------------


def url_case(rng: random.Random, world: World, index: int, nul: bool = False) -> Case:
    good = world.db_url
    roll = rng.random()
    if roll < 0.3:
        url = _insert(rng, good, (["\x00"] if nul else []) + _CONTROL)
    elif roll < 0.45:
        path = good.split("://", 1)[1].lstrip("/")
        url = "sqlite" + rng.choice(["", ":", ";", "//"]) + "/" + path  # no "://"
    elif roll < 0.6:
        url = f"{rng.choice(string.ascii_lowercase)}{_junk(rng, 5).lower()}://h/{_junk(rng)}"
    elif roll < 0.75:
        port = rng.choice(["".join(rng.choices(string.ascii_letters, k=4)), "1x", "::"])
        url = f"{rng.choice(['postgresql', 'mysql'])}://h:{port}/db"
    elif roll < 0.85:
        url = rng.choice(["sqlite://", "sqlite:///"])
    else:
        url = rng.choice(["postgresql://h/", "mysql://h", "://", "postgresql:///",
                          f"mysql+pymysql://{_junk(rng)}/"])
    command = rng.choice([["backups"], ["status"], ["check", "restore"]])
    return Case("url", index, [*command, "--db", url], (2,), [_named(url)])


def _named(text: str) -> str:
    """How a message shows *text*: itself, or (with a control character) its repr."""
    return text if text.isprintable() else repr(text)[1:-1]


# -- backup ids and profile names -----------------------------------------------------------

_ID_BAD = ["/", "\\", " ", "..", "\n", "\x1b", "\x07", "$", ":", "*", "?", "é", "\t", "'",
           '"', "~", "%", "../", "@"]


def backup_id_case(rng: random.Random, world: World, index: int, nul: bool = False) -> Case:
    base = _junk(rng, rng.randrange(0, 20))
    backup_id = _insert(rng, base, _ID_BAD + (["\x00"] if nul else []))
    if rng.random() < 0.1:
        backup_id = rng.choice([".hidden", "-lead", "_lead", "x" * 129, ""])
    db = ["--db", world.db_url]
    command = ["restore", "--yes", *db, "--", backup_id] if index % 2 or not backup_id \
        else ["verify", *db, "--", backup_id]
    return Case("backup_id", index, command, (2,), [f"{repr(backup_id)[:80]} is not a backup id"])


_NAME_BAD = ["/", "\\", " ", ".", "..", "\n", "\x1b", "\x07", "$", ":", "é", "ß", "\t", "'",
             "+", "@", "%", "\x7f", "\u200b"]


def profile_name_case(rng: random.Random, world: World, index: int) -> Case:
    if rng.random() < 0.15:
        name = rng.choice(["", "a" * rng.randrange(65, 120)])
    else:
        name = _insert(rng, _junk(rng, rng.randrange(0, 30)), _NAME_BAD)
    config = world.root / "bot.json"
    if not config.exists():
        config.write_text(json.dumps({"db_url": world.db_url}), encoding="utf-8")
    shown = repr(name if len(name) <= 40 else name[:40] + "...")
    command = rng.choice(["create", "switch"])
    return Case("profile_name", index, ["profile", command, "--config", str(config), "--", name],
                (2,), [f"{shown} is not a valid profile name"])


GENERATORS: dict[str, Callable[[random.Random, World, int], Case]] = {
    "manifest": manifest_case,
    "config": config_case,
    "url": url_case,
    "backup_id": backup_id_case,
    "profile_name": profile_name_case,
}


def cases(kind: str, world: World, count: int, seed: int = 20250101) -> Any:
    """*count* cases of *kind*, each made (files written) just before it is yielded."""
    rng = random.Random(f"{seed}-{kind}")
    for index in range(count):
        yield GENERATORS[kind](rng, world, index)


def finish(case: Case) -> None:
    """Check what the case had to leave, then remove its generated files so the catalog
    does not grow over the run."""
    for path in case.kept:
        assert path.exists(), f"{case}: {path} was removed"
        path.unlink()


def problems(case: Case, code: int, out: str, err: str) -> list[str]:
    """What is wrong with one run's result, empty when it is right."""
    found = []
    if code not in case.codes:
        found.append(f"exit {code}, expected {case.codes}")
    text = out + err
    found += [f"{name!r} not named" for name in case.names if name not in text]
    if "Traceback" in text:
        found.append("a traceback")
    return [f"{case}: {p}\n--- stdout:\n{out[-800:]}\n--- stderr:\n{err[-1500:]}"
            for p in found]

