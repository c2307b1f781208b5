"""Every entry of docs/runbook.rst, reproduced: the symptom is created for real, then the
commands the entry gives are run, as written there, and their output is compared with
the output the entry shows.

The commands are read from the entry's ``.. code-block:: console`` blocks, so the
runbook and this test cannot drift apart: a ``$ dbguard ...`` line is run as a real
``python -m dbguard_plugin ...`` process (``$ mkdir``, ``$ mv`` and ``$ ls`` as those
programs), from a directory that holds ``user_data/config.json`` and the database, as a
freqtrade operator's shell would be. ``<ID>``-style placeholders are filled by the test.
Every output line the entry shows must appear in the real output, compared after
normalising what changes from run to run (the directory, which the docs show as
``/tmp/ft``; digits; hex digests; spacing); ``...`` skips lines. ``$ echo $?`` gives the
exit code the previous command must have (0 when the entry shows none); ``Killed`` says
the shell reported that the process was killed (SIGKILL).

Between the blocks the test does what the entry tells the operator to do by hand (end
the transaction that holds the lock, edit the configuration, stop the bot).

``RUNBOOK_TRANSCRIPT=DIR`` writes each entry's real transcript (directory shown as
``/tmp/ft``) to ``DIR/<entry>.txt``: that is how the outputs in the runbook are refreshed.

What is real and what is simulated, per entry, is said in its test's docstring.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cli_runs import Cli, CliResult
from faults import mounted
from rst_blocks import code_blocks

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.rst"
TIMEOUT = 60.0
#: How the docs spell the operator's directory.
DOCS_DIR = "/tmp/ft"
#: Programs besides dbguard that an entry may tell the operator to run.
OTHER_PROGRAMS = {"mkdir", "mv", "ls"}

ENTRIES = ("locked", "corrupt", "verify-failed", "put-back", "interrupted", "undecided",
           "damaged-journal", "disk-full", "vetoed")


# -- reading the runbook ----------------------------------------------------------------


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0
    killed: bool = False


def _console_blocks(text: str) -> list[list[str]]:
    return [[b.strip() for b in body if b.strip()]
            for _number, body in code_blocks(text, "console")]


def entry(key: str) -> list[list[Command]]:
    """The console blocks of runbook entry *key* (``.. _runbook_<key>:``), as commands."""
    text = RUNBOOK.read_text(encoding="utf-8")
    start = text.index(f".. _runbook_{key}:")
    following = text.find(".. _runbook_", start + 1)
    section = text[start : following if following != -1 else len(text)]
    parsed = []
    for block in _console_blocks(section):
        commands: list[Command] = []
        exit_code_follows = False
        for line in block:
            if line == "$ echo $?":
                exit_code_follows = True
            elif exit_code_follows:
                commands[-1].exit_code = int(line)
                exit_code_follows = False
            elif line.startswith("$ "):
                commands.append(Command(line[2:]))
            else:
                assert commands, f"runbook entry {key}: output before any command: {line}"
                commands[-1].expected.append(line)
        for command in commands:
            if "Killed" in command.expected:
                command.expected.remove("Killed")
                command.killed = True
        parsed.append(commands)
    return parsed


def normalise(text: str, directory: Path) -> list[str]:
    text = text.replace(str(directory), DOCS_DIR)
    text = text.replace(f" on {socket.gethostname()}:", " on vm:")
    text = re.sub(r"[0-9a-f]{12,}", "H", text)
    text = re.sub(r"\d+", "0", text)
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines() if line.strip()]


# -- running it -------------------------------------------------------------------------


class Operator:
    """An operator's shell in a freqtrade directory: ``user_data/config.json``, the db."""

    def __init__(self, directory: Path, env: dict[str, str], name: str, run_cli: Cli) -> None:
        self.dir = directory
        self.env = env
        self._run_cli = run_cli
        self.name = name
        self.ids: dict[str, str] = {}
        self.transcript: list[str] = []
        (directory / "user_data").mkdir()
        self.db = directory / "user_data" / "tradesv3.sqlite"
        self.config_path = directory / "user_data" / "config.json"
        self.settings: dict[str, Any] = {"environment": "production"}
        self.write_config()

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def catalog(self) -> Path:
        backup_dir = self.settings.get("backup_dir")
        return Path(backup_dir) if backup_dir else self.db.with_name(
            self.db.name + ".dbguard") / "backups"

    def write_config(self, **changes: Any) -> None:
        """freqtrade's config.json with a "dbguard" object; ``KEY=None`` removes a key."""
        for key, value in changes.items():
            if value is None:
                self.settings.pop(key, None)
            else:
                self.settings[key] = value
        config = {"max_open_trades": 3, "stake_currency": "USDT", "db_url": self.url,
                  "dbguard": self.settings}
        self.config_path.write_text(json.dumps(config, indent=4), encoding="utf-8")

    def backup(self) -> str:
        """A backup taken before the incident, as the bot's own would be."""
        done = self.cli("backup", "--config", str(self.config_path), "--json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["id"])

    def cli(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return self._run_cli(*args, env=env or self.env, cwd=self.dir)

    def run(self, commands: list[Command], env: dict[str, str] | None = None) -> None:
        """Run one block's commands as written, and compare with what the entry shows."""
        for command in commands:
            line = command.line
            for placeholder, value in self.ids.items():
                line = line.replace(placeholder, value)
            assert "<" not in line, f"runbook {self.name}: no value for a placeholder in {line}"
            argv = shlex.split(line)
            if argv[0] == "dbguard":
                done = self.cli(*argv[1:], env=env)
            else:
                assert argv[0] in OTHER_PROGRAMS, (
                    f"runbook {self.name}: {argv[0]} is not a command this test can run")
                done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                                      check=False, cwd=self.dir, stdin=subprocess.DEVNULL)
            output = done.stdout + done.stderr
            self.transcript.append(f"$ {line}\n{output}(exit {done.returncode})\n")
            actual = normalise(output, self.dir)
            where = f"runbook {self.name}: `{line}`"
            if command.killed:
                assert done.returncode == -signal.SIGKILL, f"{where} was not killed:\n{output}"
            else:
                assert done.returncode == command.exit_code, (
                    f"{where} exited {done.returncode}, the runbook says "
                    f"{command.exit_code}:\n{output}")
            for expected in command.expected:
                if expected == "...":
                    continue
                wanted = normalise(expected, Path(DOCS_DIR))[0]
                assert wanted in actual, (
                    f"{where}: the runbook shows\n  {expected}\nbut the output was:\n{output}")

    def save_transcript(self) -> None:
        target = os.environ.get("RUNBOOK_TRANSCRIPT")
        if target and self.transcript:
            text = "\n".join(self.transcript).replace(str(self.dir), DOCS_DIR)
            Path(target).mkdir(parents=True, exist_ok=True)
            (Path(target) / f"{self.name}.txt").write_text(text, encoding="utf-8")


@pytest.fixture
def operator(request: pytest.FixtureRequest, tmp_path: Path,
             child_env: Callable[..., dict[str, str]], run_cli: Cli) -> Iterator[Operator]:
    name = request.node.name.removeprefix("test_").split("[")[0]
    op = Operator(tmp_path, child_env(), name, run_cli)
    yield op
    op.save_transcript()


def make_db(path: Path, bulk_rows: int = 0) -> None:
    """A freqtrade-shaped database in WAL mode: trades, orders (indexed), optional bulk."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, pair TEXT NOT NULL, "
                 "is_open INTEGER NOT NULL)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, ft_trade_id INTEGER NOT NULL, "
                 "ft_is_open INTEGER NOT NULL, note TEXT)")
    conn.execute("CREATE INDEX orders_trade ON orders (ft_trade_id)")
    conn.executemany("INSERT INTO trades VALUES (?, 'BTC/USDT', 0)",
                     [(i,) for i in range(1, 121)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, 0, ?)",
                     [(i, (i + 1) // 2, f"fill {i:06d} " * 20) for i in range(1, 241)])
    if bulk_rows:
        conn.execute("CREATE TABLE candles (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        conn.executemany("INSERT INTO candles (b) VALUES (randomblob(4000))",
                         [()] * bulk_rows)
    conn.commit()
    conn.close()


def add_trade(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO trades (pair, is_open) VALUES ('ETH/USDT', 0)")
    conn.commit()
    conn.close()


def quick_check(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


def damage(path: Path) -> None:
    """Zero 64 bytes of a b-tree page's cell pointers, as a torn write or a failing disk
    would: SQLite still opens the file and counts its rows, but ``quick_check`` reports
    the damage. The first page (after the schema) where that holds is damaged."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    original = path.read_bytes()
    for page in range(1, pages):
        damaged = bytearray(original)
        damaged[page * 4096 + 8 : page * 4096 + 72] = bytes(64)
        path.write_bytes(bytes(damaged))
        conn = sqlite3.connect(path)
        try:
            conn.execute("SELECT count(*) FROM orders").fetchone()
            conn.execute("SELECT count(*) FROM trades").fetchone()
            reported = [str(r[0]) for r in conn.execute("PRAGMA quick_check")] != ["ok"]
        except sqlite3.DatabaseError:
            reported = False
        finally:
            conn.close()
        if reported:
            return
    path.write_bytes(original)
    pytest.fail("found no page whose damage quick_check reports on a readable database")


# -- the entries ------------------------------------------------------------------------


def test_every_entry_has_commands_and_a_test() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    keys = re.findall(r"^\.\. _runbook_([a-z-]+):", text, re.MULTILINE)
    assert sorted(keys) == sorted(ENTRIES), "each runbook entry needs a test here"
    for key in ENTRIES:
        blocks = entry(key)
        assert blocks, f"runbook entry {key} has no console block"
        assert all(blocks), f"runbook entry {key} has an empty console block"
        for block in blocks:
            for command in block:
                program = shlex.split(command.line)[0]
                assert program == "dbguard" or program in OTHER_PROGRAMS, (
                    f"runbook entry {key}: `{command.line}` cannot be reproduced here")


#: Holds a write transaction (an uncommitted INSERT) until a line arrives on stdin: a
#: DB browser with unsaved changes, or a script that forgot to commit. argv: db path
WRITE_LOCK_HOLDER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO trades (pair, is_open) VALUES ('SOL/USDT', 0)")
    print("READY", flush=True)
    sys.stdin.readline()
    conn.execute("COMMIT")
    conn.close()
"""


def test_locked(operator: Operator, spawn: Callable[..., Any]) -> None:
    """Real: another process holds SQLite's write lock (BEGIN IMMEDIATE, uncommitted)
    past a 1 s ``busy_timeout``. The fix: the transaction ends, the timeout goes back."""
    symptom, diagnose, fixed = entry("locked")
    make_db(operator.db)
    operator.backup()  # the bot's last backup, before the lock
    operator.write_config(busy_timeout=1)
    holder = spawn(WRITE_LOCK_HOLDER, str(operator.db))
    operator.run(symptom)
    operator.run(diagnose)
    holder.send()
    assert holder.wait() == 0
    operator.write_config(busy_timeout=None)
    operator.run(fixed)


def test_corrupt(operator: Operator) -> None:
    """Real: the live file is damaged on disk (bytes of a b-tree page zeroed) with the bot
    stopped. The runbook moves it aside and restores the newest verified backup."""
    symptom, find, restore, fixed = entry("corrupt")
    make_db(operator.db)
    operator.ids["<ID>"] = operator.backup()
    add_trade(operator.db)
    damage(operator.db)
    operator.run(symptom)
    operator.run(find)
    operator.run(restore)
    assert quick_check(operator.db) == ["ok"]
    assert (operator.dir / "user_data" / "damaged" / "tradesv3.sqlite").is_file()
    operator.run(fixed)


def test_corrupt_restore_in_place(operator: Operator) -> None:
    """What an operator would try first: restore over the damaged file, keeping it as a
    safety backup (or being told how to proceed)."""
    make_db(operator.db)
    good = operator.backup()
    damage(operator.db)
    done = operator.cli("restore", good, "--yes", "--config", str(operator.config_path))
    assert done.returncode == 0, done.stderr
    assert quick_check(operator.db) == ["ok"]


def test_corrupt_beyond_reading_gives_an_error_not_a_traceback(operator: Operator) -> None:
    make_db(operator.db)
    good = operator.backup()
    conn = sqlite3.connect(operator.db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(operator.db, "r+b") as f:  # page 2 onwards: the tables' root pages
        f.seek(4096)
        f.write(b"\xde\xad\xbe\xef" * 2048)
    for args in (["backup"], ["restore", good, "--preview"]):
        done = operator.cli(*args, "--config", str(operator.config_path))
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (1, 4), done.stderr
        assert str(operator.db) in done.stderr


def test_verify_failed(operator: Operator) -> None:
    """Real: the newest backup's file is damaged on disk after it was made (4 KiB
    zeroed); the restore refuses it and the runbook restores an older, sound one."""
    symptom, find, fixed = entry("verify-failed")
    make_db(operator.db)
    operator.ids["<OLDER-ID>"] = operator.backup()
    add_trade(operator.db)
    newest = operator.ids["<ID>"] = operator.backup()
    add_trade(operator.db)
    before = operator.db.read_bytes()
    with open(operator.catalog / f"{newest}.sqlite", "r+b") as f:
        f.seek(8192)
        f.write(b"\x00" * 4096)
    operator.run(symptom)
    assert operator.db.read_bytes() == before  # nothing was changed
    operator.run(find)
    operator.run(fixed)


def test_put_back(operator: Operator) -> None:
    """Simulated cause: the backup's manifest is edited so that its row counts are wrong;
    the restore writes the backup, its post-check fails and the safety backup is put
    back. (A real write failure, an I/O error, is what this stands for.)"""
    symptom, check, fixed = entry("put-back")
    make_db(operator.db)
    operator.ids["<OLDER-ID>"] = operator.backup()
    add_trade(operator.db)
    bad = operator.ids["<ID>"] = operator.backup()
    manifest = operator.catalog / f"{bad}.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["tables"]["orders"] += 1
    manifest.write_text(json.dumps(data), encoding="utf-8")
    add_trade(operator.db)
    conn = sqlite3.connect(operator.db)
    live_trades = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    conn.close()
    operator.run(symptom)
    conn = sqlite3.connect(operator.db)
    assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == live_trades
    conn.close()
    operator.run(check)
    operator.run(fixed)


def test_interrupted(operator: Operator) -> None:
    """Real: the restore process is killed with SIGKILL (DBGUARD_CRASH_AT=restore:copied,
    the test's way to kill it right after the copy committed); the next command
    finishes it."""
    symptom, recover, fixed = entry("interrupted")
    make_db(operator.db)
    operator.ids["<ID>"] = operator.backup()
    add_trade(operator.db)
    operator.run(symptom, env={**operator.env, "DBGUARD_CRASH_AT": "restore:copied"})
    assert (operator.db.with_name(operator.db.name + ".dbguard") / "operation.json").exists()
    operator.run(recover)
    operator.run(fixed)
    assert not (operator.db.with_name(operator.db.name + ".dbguard") / "operation.json").exists()


def restart_and_migrate(path: Path) -> None:
    """What a bot restarted after the crash does before dbguard recovers: a new (closed)
    trade, then its migrations (a new column), then a VACUUM."""
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO trades (pair, is_open) VALUES ('SOL/USDT', 0)")
    conn.commit()
    conn.execute("ALTER TABLE trades ADD COLUMN leverage REAL")
    conn.commit()
    conn.execute("VACUUM")
    conn.close()


def _undecided(operator: Operator) -> list[list[Command]]:
    """Real: the restore is killed right after its copy committed
    (DBGUARD_CRASH_AT=restore:copied); then the bot's own process writes and migrates
    before any dbguard command runs. Returns the choice blocks and the last one."""
    symptom, found, keep, put_back, fixed = entry("undecided")
    make_db(operator.db)
    operator.ids["<ID>"] = operator.backup()
    add_trade(operator.db)
    operator.run(symptom, env={**operator.env, "DBGUARD_CRASH_AT": "restore:copied"})
    journal = operator.db.with_name(operator.db.name + ".dbguard") / "operation.json"
    operator.ids["<SAFETY-ID>"] = json.loads(journal.read_text())["safety_id"]
    restart_and_migrate(operator.db)
    operator.run(found)
    return [keep, put_back, fixed]


def _trades(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM trades ORDER BY id").fetchall()
    finally:
        conn.close()


def test_undecided(operator: Operator) -> None:
    """The first choice: keep the database as the bot left it (its new trade and its
    migration stay)."""
    keep, _put_back, fixed = _undecided(operator)
    before = _trades(operator.db)
    operator.run(keep)
    operator.run(fixed)
    assert _trades(operator.db) == before
    assert before[-1][1:] == ("SOL/USDT", 0, None)


def test_undecided_put_back(operator: Operator) -> None:
    """The other choice: put back what the database held before the restore."""
    _keep, put_back, fixed = _undecided(operator)
    operator.run(put_back)
    operator.run(fixed)
    assert [t[1] for t in _trades(operator.db)][-2:] == ["BTC/USDT", "ETH/USDT"]


def test_damaged_journal(operator: Operator) -> None:
    """Real: a journal cut short in the middle of a field, as a failing disk or a hand
    edit leaves it (dbguard itself writes it atomically)."""
    make_db(operator.db)
    operator.backup()
    journal = operator.db.with_name(operator.db.name + ".dbguard") / "operation.json"
    journal.write_text('{"operation": "restore", "step": "cop', encoding="utf-8")
    symptom, check, keep, fixed = entry("damaged-journal")
    operator.run(symptom)
    operator.run(check)
    before = _trades(operator.db)
    operator.run(keep)
    operator.run(fixed)
    assert not journal.exists()
    assert _trades(operator.db) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 32 MiB file system (tmpfs) for the catalog; skipped where it cannot be
    mounted (not root, not Linux)."""
    point = tmp_path / "backup-disk"
    point.mkdir()
    with mounted(point, "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs"):
        yield point


def test_disk_full(operator: Operator, small_disk: Path) -> None:
    """Real: ``backup_dir`` is a 32 MiB file system (a tmpfs the test mounts; skipped where
    it cannot) that two backups of a 6 MiB database have filled past what a third needs
    (the database's size and 16 MiB to spare). The fix: retention keeps fewer."""
    symptom, prune, fixed = entry("disk-full")
    make_db(operator.db, bulk_rows=1500)
    operator.write_config(backup_dir=str(small_disk / "ft"))
    operator.backup()
    add_trade(operator.db)
    operator.backup()
    add_trade(operator.db)
    operator.run(symptom)
    operator.write_config(keep_last=1)
    operator.run(prune)
    operator.run(fixed)
    kept = sorted(operator.catalog.glob("*-manual.json"))
    assert len(kept) == 1, kept


def test_disk_full_message_says_what_is_needed(operator: Operator, small_disk: Path) -> None:
    make_db(operator.db, bulk_rows=1500)
    operator.write_config(backup_dir=str(small_disk / "ft"))
    operator.backup()
    operator.backup()
    done = operator.cli("backup", "--config", str(operator.config_path))
    assert done.returncode == 1, done.stderr
    found = re.search(r"\(([\d.]+) MiB needed, ([\d.]+) MiB free\)", done.stderr)
    assert found, done.stderr
    assert float(found.group(1)) > float(found.group(2)), done.stderr


#: A freqtrade-like bot: session, one order in flight; on a stdin line the order fills,
#: the session ends and the bot exits (a clean stop). argv: config path
BOT = """
    import sys
    from dbguard_plugin import Guard

    guard = Guard.from_config(sys.argv[1])
    guard.start_session("S-7")
    assert guard.admit_order(), "admit_order refused"
    guard.order_event("A-1001", "submitted", symbol="BTC/USDT", side="buy")
    guard.publish_status_now()
    print("READY", flush=True)
    sys.stdin.readline()
    guard.order_event("A-1001", "filled")
    guard.end_session()
    guard.close()
"""


def test_vetoed(operator: Operator, spawn: Callable[..., Any]) -> None:
    """Real: a bot process with a session and an order in flight (the real lease); the
    operator waits until it stops, then the restore runs."""
    symptom, diagnose, fixed = entry("vetoed")
    make_db(operator.db)
    operator.ids["<ID>"] = operator.backup()
    bot = spawn(BOT, str(operator.config_path))
    operator.run(symptom)
    operator.run(diagnose)
    bot.send()
    assert bot.wait() == 0
    operator.run(fixed)
