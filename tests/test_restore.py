"""``dbguard restore``: verified, atomic, previewed, guarded, and visible to a running bot.

Every restore here is a real ``python -m dbguard_plugin restore`` process (or the engine
in this process where a test needs its hooks), on real SQLite files; the bot and the
readers are real child processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from sqlite_files import BACKUP_ROWS, LIVE_ROWS, change_live, file_sha, integrity, make_db, rows

from dbguard_plugin import Operation, hookimpl
from dbguard_plugin.operations import restore as engine
from dbguard_plugin.settings.config import Config

JOURNAL = "operation.json"


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def restorable(db_path, make_guard, db_url):
    """A live database (3 rows) and a verified backup of it from before (5 rows)."""
    make_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()
    change_live(db_path)
    assert rows(db_path) == LIVE_ROWS
    return manifest


# -- a bot's connections stay open ------------------------------------------------------

READER = """
    import sys
    import threading

    from sqlalchemy import create_engine, text

    engine = create_engine(sys.argv[1])
    held = engine.connect()  # open for the whole run, like a bot's scoped session
    marks = []
    stop = threading.Event()

    def control():
        for line in sys.stdin:
            if line.strip() != "MARK":
                break
            marks.append(line)
        stop.set()

    threading.Thread(target=control, daemon=True).start()
    while not stop.is_set():
        if marks:
            marks.pop()
            print("MARKED", flush=True)
        try:
            count, first = held.execute(text("SELECT count(*), min(v) FROM t")).one()
            held.rollback()
            with engine.connect() as pooled:
                again = pooled.execute(text("SELECT count(*) FROM t")).scalar_one()
        except Exception as exc:
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
            sys.exit(1)
        print(f"READ {count} {again} {first}", flush=True)
        stop.wait(0.005)  # pacing only: nothing waits on this
    held.close()
    engine.dispose()
    print("DONE", flush=True)
"""


def test_restore_under_open_sqlalchemy_connections(restorable, spawn, run_cli, db_url, db_path):
    reader = spawn(READER, db_url, ready="READ")
    assert reader.output[-1] == "READ 3 3 live-1"

    result = run_cli("restore", restorable.id, "--db", db_url, "--yes")
    assert result.returncode == 0, result.stderr
    assert f"restored {restorable.id}" in result.stdout

    reader.send("MARK")  # the restore has returned: the reader's next query is after it
    reader.expect("MARKED")
    assert reader.expect("READ") == "READ 5 5 backup-1"
    reader.send("STOP")
    reader.expect("DONE")
    assert reader.wait() == 0, reader.stderr
    reads = [line for line in reader.output if line.startswith(("READ", "ERROR"))]
    # Each connection sees the database whole, old or new, and once new never old
    # again. The held and the pooled connection read one after the other, so the
    # restore may commit between them: old then new ("READ 3 5 live-1"), never the
    # reverse.
    assert set(reads) <= {"READ 3 3 live-1", "READ 3 5 live-1", "READ 5 5 backup-1"}, reads
    seen = [(int(line.split()[1]), int(line.split()[2])) for line in reads]
    order = [count for pair in seen for count in pair]
    assert order == sorted(order), reads
    assert "Traceback" not in reader.stderr
    assert rows(db_path) == BACKUP_ROWS
    assert integrity(db_path) == ["ok"]


# -- preview and open positions ---------------------------------------------------------

FREQTRADE_SCHEMA = """
    CREATE TABLE trades (id INTEGER PRIMARY KEY, exchange TEXT, pair TEXT,
                         is_open BOOLEAN NOT NULL, amount FLOAT, open_rate FLOAT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, ft_trade_id INTEGER REFERENCES trades(id),
                         ft_order_side TEXT, ft_pair TEXT, ft_is_open BOOLEAN NOT NULL,
                         order_id TEXT, status TEXT);
    CREATE TABLE pairlocks (id INTEGER PRIMARY KEY, pair TEXT, active BOOLEAN);
"""


def make_freqtrade_db(path: Path) -> None:
    """Backed-up state: trade 1 closed, trade 2 open; orders 1-2 closed; one lock."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(FREQTRADE_SCHEMA)
    conn.executemany("INSERT INTO trades VALUES (?, 'binance', ?, ?, 1.0, 100.0)",
                     [(1, "BTC/USDT", 0), (2, "ETH/USDT", 1)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, 0, ?, 'closed')",
                     [(1, 1, "buy", "BTC/USDT", "x-1"), (2, 2, "buy", "ETH/USDT", "x-2")])
    conn.execute("INSERT INTO pairlocks VALUES (1, 'XRP/USDT', 1)")
    conn.commit()
    conn.close()


def trade_on(path: Path) -> None:
    """The bot traded on: trade 2 closed, trades 3 and 4 opened, order 5 in flight."""
    conn = sqlite3.connect(path)
    conn.execute("UPDATE trades SET is_open = 0 WHERE id = 2")
    conn.executemany("INSERT INTO trades VALUES (?, 'binance', ?, 1, 1.0, 100.0)",
                     [(3, "SOL/USDT"), (4, "ADA/USDT")])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (3, 2, "sell", "ETH/USDT", 0, "x-3", "closed"),
        (4, 3, "buy", "SOL/USDT", 0, "x-4", "closed"),
        (5, 4, "buy", "ADA/USDT", 1, "x-5", "open"),
    ])
    conn.execute("INSERT INTO pairlocks VALUES (2, 'DOT/USDT', 1)")
    conn.commit()
    conn.close()


WARNINGS = [
    "2 open trades now missing or closed in the backup: 3, 4",
    "1 open order now missing or closed in the backup: 5",
    "1 trade not open now but open in the backup: 2",
]


@pytest.fixture
def freqtrade_backup(db_path, db_url, make_guard):
    make_freqtrade_db(db_path)
    manifest = make_guard(Config(db_url=db_url)).backup()
    trade_on(db_path)
    return manifest


def test_preview_shows_rows_lost_and_open_positions(
    freqtrade_backup, run_cli, db_url, db_path, state_dir
):
    before = file_sha(db_path)
    human = run_cli("restore", freqtrade_backup.id, "--preview", "--db", db_url)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == (f"restore {freqtrade_backup.id} (manual, {freqtrade_backup.created}) "
                        f"into {db_url}:")
    assert lines[1].split() == ["TABLE", "NOW", "BACKUP", "LOST"]
    assert [line.split() for line in lines[2:5]] == [
        ["orders", "5", "2", "3"],
        ["pairlocks", "2", "1", "1"],
        ["trades", "4", "2", "2"],
    ]
    assert lines[5:] == [f"! {w}" for w in WARNINGS]

    as_json = run_cli("restore", freqtrade_backup.id, "--preview", "--json", "--db", db_url)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["backup"]["id"] == freqtrade_backup.id
    preview = data["preview"]
    assert preview["tables"] == [
        {"table": "orders", "rows_now": 5, "rows_backup": 2, "missing_from_backup": 3},
        {"table": "pairlocks", "rows_now": 2, "rows_backup": 1, "missing_from_backup": 1},
        {"table": "trades", "rows_now": 4, "rows_backup": 2, "missing_from_backup": 2},
    ]
    assert preview["open_trades_lost"] == ["3", "4"]
    assert preview["open_orders_lost"] == ["5"]
    assert preview["trades_resurrected"] == ["2"]
    assert preview["orders_resurrected"] == []
    assert preview["drops_open_positions"] is True
    assert preview["warnings"] == WARNINGS

    # A preview changes nothing: no write, no safety backup, no journal.
    assert file_sha(db_path) == before
    assert sorted(n for n in os.listdir(state_dir / "backups")
                  if n.endswith(".json") and not n.startswith(".")) == [
        f"{freqtrade_backup.id}.json"]
    assert not (state_dir / JOURNAL).exists()


def test_a_table_name_never_reaches_the_terminal_raw(freqtrade_backup, run_cli, db_url,
                                                    db_path):
    """Any name SQLite takes, a line break or an escape sequence included, is shown
    escaped in the preview table: it cannot break the layout or drive the terminal."""
    with sqlite3.connect(db_path) as conn:
        conn.execute('CREATE TABLE "clear\x1b[2Jscreen\nnext" (v INTEGER)')
    conn.close()
    human = run_cli("restore", freqtrade_backup.id, "--preview", "--db", db_url)
    assert human.returncode == 0, human.stderr
    assert "\x1b" not in human.stdout
    (row,) = [line for line in human.stdout.splitlines() if line.startswith("clear")]
    assert row.split() == ["clear\\x1b[2Jscreen\\nnext", "0", "-", "0"]
    as_json = run_cli("restore", freqtrade_backup.id, "--preview", "--json", "--db", db_url)
    tables = [t["table"] for t in json.loads(as_json.stdout)["preview"]["tables"]]
    assert "clear\x1b[2Jscreen\nnext" in tables  # the data keeps the real name


def test_dropping_open_positions_needs_force_and_is_audited(
    freqtrade_backup, run_cli, db_url, db_path, state_dir
):
    before = file_sha(db_path)
    refused = run_cli("restore", freqtrade_backup.id, "--db", db_url, "--yes")
    assert refused.returncode == 3, refused.stderr
    assert "would drop open positions; nothing was changed" in refused.stderr
    assert "--force" in refused.stderr
    assert file_sha(db_path) == before
    audit = state_dir / "audit.jsonl"
    assert not audit.exists()

    forced = run_cli("restore", freqtrade_backup.id, "--db", db_url, "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert [r[0] for r in rows(db_path, "trades") if r[3]] == [2]  # open as in the backup
    assert [r[0] for r in rows(db_path, "orders")] == [1, 2]
    (entry,) = [json.loads(line) for line in audit.read_text().splitlines()]
    assert entry["operation"] == "restore"
    assert entry["database"] == db_url
    assert entry["who"]
    assert [r["code"] for r in entry["reasons_overridden"]] == ["drops-open-positions"] * 2
    assert [r["message"] for r in entry["reasons_overridden"]] == WARNINGS[:2]


def test_restore_with_yes_prints_the_rows_lost_that_preview_prints(
    freqtrade_backup, run_cli, db_url
):
    """--yes skips the question, not the counting: LOST is a number, never a bare '-'."""
    previewed = run_cli("restore", freqtrade_backup.id, "--preview", "--db", db_url)
    assert previewed.returncode == 0, previewed.stderr
    done = run_cli("restore", freqtrade_backup.id, "--db", db_url, "--yes", "--force")
    assert done.returncode == 0, done.stderr
    table = [line.split() for line in done.stdout.splitlines()[1:5]]
    assert table == [
        ["TABLE", "NOW", "BACKUP", "LOST"],
        ["orders", "5", "2", "3"],
        ["pairlocks", "2", "1", "1"],
        ["trades", "4", "2", "2"],
    ]
    assert done.stdout.splitlines()[:5] == previewed.stdout.splitlines()[:5]


def test_restore_without_yes_and_without_a_tty_asks_for_yes(
    restorable, run_cli, db_url, db_path, state_dir
):
    before = file_sha(db_path)
    result = run_cli("restore", restorable.id, "--db", db_url)
    assert result.returncode == 2, result.stderr
    assert "needs confirmation: pass --yes" in result.stderr
    assert file_sha(db_path) == before
    assert [n for n in os.listdir(state_dir / "backups") if "pre-restore" in n] == []


# -- bad backups ------------------------------------------------------------------------


def _flip_byte(path: Path, manifest_path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path, manifest_path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_sqlite(path: Path, manifest_path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is a zip archive, not a database\n" * 200)


def _not_sqlite_with_matching_manifest(path: Path, manifest_path: Path) -> None:
    """The file replaced and the manifest's size and sha256 made to match it: only the
    SQLite check can tell."""
    _not_sqlite(path, manifest_path)
    data = json.loads(manifest_path.read_text())
    content = path.read_bytes()
    data.update(size=len(content), sha256=hashlib.sha256(content).hexdigest(),
                raw_size=len(content), raw_sha256=hashlib.sha256(content).hexdigest())
    manifest_path.write_text(json.dumps(data))


def _edit_manifest_sha(path: Path, manifest_path: Path) -> None:
    data = json.loads(manifest_path.read_text())
    data["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(data))


BAD_BACKUPS = {
    "flipped byte": (_flip_byte, 4, "does not match the manifest's"),
    "truncated": (_truncate, 4, "does not match the manifest's"),
    "not sqlite": (_not_sqlite, 4, "does not match the manifest's"),
    "not sqlite, manifest matching": (_not_sqlite_with_matching_manifest, 4,
                                      "not a SQLite database"),
    "manifest sha256 edited": (_edit_manifest_sha, 4, "does not match the manifest's"),
}


@pytest.mark.parametrize("damage", list(BAD_BACKUPS))
def test_a_damaged_backup_is_refused_and_nothing_changes(
    damage, db_path, db_url, make_guard, run_cli, state_dir
):
    make_db(db_path, rows=300, bulk=40)  # a few dozen pages, so a flipped byte is in data
    manifest = make_guard(Config(db_url=db_url)).backup()
    change_live(db_path)
    catalog = state_dir / "backups"
    spoil, code, message = BAD_BACKUPS[damage]
    spoil(catalog / manifest.file, catalog / f"{manifest.id}.json")
    before = file_sha(db_path)

    result = run_cli("restore", manifest.id, "--db", db_url, "--yes")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert f"backup {manifest.id} failed verification; nothing was changed" in result.stderr
    assert file_sha(db_path) == before
    assert [n for n in os.listdir(catalog) if "pre-restore" in n or n.startswith(".tmp-")] == []
    assert not (state_dir / JOURNAL).exists()
    # The failed verification is recorded: the backup no longer counts as verified.
    assert json.loads((catalog / f"{manifest.id}.json").read_text())["verified"] is False


@pytest.mark.parametrize("backup_id", ["../../etc/passwd", "/etc/passwd", "..", "a/../b"])
def test_a_backup_id_that_is_a_path_is_refused(
    backup_id, restorable, run_cli, db_url, db_path, state_dir
):
    before = file_sha(db_path)
    # The id is refused before anything is opened: the CLI in this process is enough.
    result = run_cli("restore", backup_id, "--db", db_url, "--yes", in_process=True)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"dbguard: {backup_id!r} is not a backup id")
    assert file_sha(db_path) == before
    assert not (state_dir / JOURNAL).exists()


def test_an_unknown_backup_id_names_the_catalog(restorable, run_cli, db_url, state_dir):
    result = run_cli("restore", "20200101T000000000Z-manual", "--db", db_url, "--yes")
    assert result.returncode == 1
    assert f"no backup '20200101T000000000Z-manual' in {state_dir / 'backups'}" in result.stderr


# -- one replacement at a time, and the bot waits ---------------------------------------

#: A real restore (the engine in a child), paused inside: after its safety backup and
#: journal, just before it writes. Prints READY, writes on the first stdin line.
#: argv: db_url, backup id
PAUSED_RESTORE = """
    import sys
    from dbguard_plugin import Guard, signals
    from dbguard_plugin.operations.restore import restore

    def pause(guard, backup_id, **extra):
        print("READY", backup_id, flush=True)
        sys.stdin.readline()

    signals.restore_started.connect(pause)
    guard = Guard(db_url=sys.argv[1])
    outcome = restore(guard, sys.argv[2])
    print("RESTORED", outcome.backup_id, flush=True)
    guard.close()
"""


def test_two_restores_at_once_one_is_vetoed_naming_the_other(
    restorable, spawn, run_cli, db_url, db_path, state_dir
):
    first = spawn(PAUSED_RESTORE, db_url, restorable.id)
    assert (state_dir / JOURNAL).exists()

    second = run_cli("restore", restorable.id, "--db", db_url, "--yes")
    assert second.returncode == 3, second.stderr
    assert "restore: vetoed" in second.stderr
    assert f"restore in progress by pid {first.pid}" in second.stderr
    assert "recovered:" not in second.stderr  # a running operation is not undone

    first.send()
    assert first.expect("RESTORED") == f"RESTORED {restorable.id}"
    assert first.wait() == 0, first.stderr
    assert rows(db_path) == BACKUP_ROWS
    # Exactly one safety backup: the second restore never got that far.
    assert len([n for n in os.listdir(state_dir / "backups")
                if n.endswith("-pre-restore.json")]) == 1
    assert not (state_dir / JOURNAL).exists()


def test_admit_order_is_refused_during_a_restore_and_admitted_after(
    restorable, spawn, make_guard, db_url
):
    bot = make_guard()
    restoring = spawn(PAUSED_RESTORE, db_url, restorable.id)
    assert bot.admit_order() is False  # maintenance: the restore holds the lease

    restoring.send()
    restoring.expect("RESTORED")
    assert restoring.wait() == 0
    assert bot.admit_order() is True
    bot.withdraw_admission()


# -- compressed backups, and telling the host ---------------------------------------------


def test_restore_of_a_gzip_backup(tmp_path, db_path, db_url, make_guard, run_cli, state_dir):
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"db_url": db_url, "dbguard": {"compression": "gzip"}}))
    make_db(db_path, rows=5, bulk=100)
    manifest = make_guard(Config.load(config_file)).backup()
    assert manifest.compression == "gzip"
    assert manifest.file.endswith(".sqlite.gz")
    expected = rows(db_path)
    change_live(db_path)

    result = run_cli("restore", manifest.id, "--config", str(config_file), "--yes", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["backup_id"] == manifest.id
    assert outcome["safety_id"].endswith("-pre-restore")
    assert rows(db_path) == expected
    assert integrity(db_path) == ["ok"]
    catalog = state_dir / "backups"
    assert (catalog / f"{outcome['safety_id']}.sqlite.gz").is_file()
    assert [n for n in os.listdir(catalog) if n.startswith(".tmp-")] == []


def test_the_refresh_hook_is_called_after_a_restore_in_this_process(
    restorable, make_guard, register_plugin, db_url, db_path
):
    calls = []

    class Host:
        @hookimpl
        def dbguard_refresh(self, guard, operation):
            calls.append((guard, operation, rows(db_path)))  # the host reloads here

    register_plugin(Host())
    guard = make_guard()
    outcome = engine.restore(guard, restorable.id)
    assert calls == [(guard, Operation.RESTORE, BACKUP_ROWS)]
    assert outcome.backup_id == restorable.id


def test_a_bot_notices_a_restore_by_another_process_on_its_next_tick(
    restorable, tmp_path, spawn, run_cli, db_url, db_path, scripts
):
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"db_url": db_url, "dbguard": {
        "environment": "development", "backup_on_session_start": False,
        "backup_on_session_end": False}}))
    bot = spawn(scripts["ticking_bot"], str(config_file), str(db_path))
    bot.send("TICK")
    bot.expect("TICKED")

    result = run_cli("restore", restorable.id, "--config", str(config_file), "--yes")
    assert result.returncode == 0, result.stderr

    bot.send("TICK")
    assert bot.expect("REFRESHED") == "REFRESHED restore 5"
    bot.expect("TICKED")
    bot.send("TICK")  # once per replacement, not on every tick
    bot.expect("TICKED")
    bot.send("")
    assert bot.wait() == 0, bot.stderr
    assert [line for line in bot.output if line.startswith("REFRESHED")] == [
        "REFRESHED restore 5"]
