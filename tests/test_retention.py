"""Retention: which backups the policy keeps, and pruning through the CLI and after each
backup. The unit tests use fabricated manifests with chosen times; the end-to-end ones
use real backups of a real database."""

from __future__ import annotations

import datetime
import json
import random
import re
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.retention import Retention, to_keep
from dbguard_plugin.settings.config import Config

DAY = 86_400
WEEK = 7 * DAY


def manifest(backup_id: str, created_ts: float, verified: bool = True) -> Manifest:
    return Manifest(
        id=backup_id, created="", created_ts=created_ts, reason="manual",
        file=f"{backup_id}.sqlite", size=1, sha256="0" * 64, compression="none",
        raw_size=1, raw_sha256="0" * 64, backend="sqlite", source="sqlite:///x",
        verified=verified,
    )


def test_keep_last_keeps_the_newest():
    backups = [manifest(f"b{i}", 1000.0 + i) for i in range(6)]
    random.Random(7).shuffle(backups)  # any order in, the same answer out
    keep = to_keep(backups, Retention(3, 0, 0), now=2000.0)
    assert keep == {"b3", "b4", "b5"}


def test_nothing_to_keep_in_an_empty_catalog():
    assert to_keep([], Retention(3, 7, 4), now=0.0) == set()


def test_daily_keeps_the_newest_verified_backup_of_each_day_in_the_window():
    day0 = 20_000 * DAY  # a UTC midnight
    now = day0 + 12 * 3600 + 1  # noon of day0, one second past
    backups = []
    for ago in range(10):
        start = day0 - ago * DAY
        backups += [manifest(f"d{ago}-early", start + 3600),
                    manifest(f"d{ago}-late", start + 12 * 3600)]
    backups.append(manifest("d1-unverified", day0 - DAY + 20 * 3600, verified=False))
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=7, keep_weekly=0), now=now)
    # keep_last 1 keeps today's newest; daily keeps each day's newest *verified* backup
    # for the 7 days (7 x 24 h) before now: days 0..6; day 7's noon is 7 days + 1 s ago.
    assert keep == {f"d{ago}-late" for ago in range(7)}


def utc(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp()


def test_weekly_keeps_the_newest_verified_backup_of_each_week_in_the_window():
    monday = utc(2025, 6, 16)
    now = monday + 2 * DAY + 12 * 3600  # Wednesday noon
    backups = []
    for ago in range(6):
        start = monday - ago * WEEK
        backups += [manifest(f"w{ago}-tue", start + DAY + 36_000),
                    manifest(f"w{ago}-wed", start + 2 * DAY + 36_000)]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=4), now=now)
    # Within 28 days of now: weeks 0..3 (week 4's newest is 28 days and 2 hours old).
    assert keep == {"w0-wed", "w1-wed", "w2-wed", "w3-wed"}


def test_weeks_start_on_monday():
    sunday, monday = utc(2025, 6, 15, 10), utc(2025, 6, 16, 10)
    backups = [manifest("sunday", sunday), manifest("monday", monday)]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=2),
                   now=monday + 3600)
    assert keep == {"sunday", "monday"}  # two ISO weeks, one backup each


def test_newest_verified_is_kept_even_when_newer_unverified_ones_exist():
    backups = [
        manifest("old-verified", 100.0),
        manifest("newest-verified", 200.0),
        manifest("unverified-1", 300.0, verified=False),
        manifest("unverified-2", 400.0, verified=False),
    ]
    keep = to_keep(backups, Retention(keep_last=2, keep_daily=0, keep_weekly=0), now=500.0)
    assert keep == {"unverified-1", "unverified-2", "newest-verified"}


def test_pinned_backups_are_kept():
    backups = [manifest(f"b{i}", 1000.0 + i) for i in range(5)]
    keep = to_keep(backups, Retention(1, 0, 0), pinned=["b0", "b2"], now=2000.0)
    assert keep == {"b0", "b2", "b4"}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 60 * DAY), st.booleans()), max_size=30),
    st.integers(0, 5), st.integers(0, 10), st.integers(0, 6),
    st.sets(st.integers(0, 29), max_size=3),
)
def test_retention_invariants(entries, last, daily, weekly, pins):
    backups = [manifest(f"b{i}", ts, verified) for i, (ts, verified) in enumerate(entries)]
    pinned = {f"b{i}" for i in pins if i < len(backups)}
    now = 61 * DAY
    keep = to_keep(backups, Retention(last, daily, weekly), pinned=pinned, now=now)
    ids = {m.id for m in backups}
    assert keep <= ids
    assert pinned <= keep
    newest_first = sorted(backups, key=lambda m: (m.created_ts, m.id), reverse=True)
    assert {m.id for m in newest_first[:last]} <= keep
    verified = [m for m in newest_first if m.verified]
    if verified:
        assert verified[0].id in keep
    # Beyond keep_last, pins and the newest verified, only the daily and weekly rules keep
    # backups: verified ones, at most one per day (week) bucket the window touches.
    extra = keep - pinned - {m.id for m in newest_first[:last]} - {
        verified[0].id if verified else ""}
    assert all(m.verified for m in backups if m.id in extra)
    assert len(extra) <= (daily + 1 if daily else 0) + (weekly + 1 if weekly else 0)


# -- end to end ----------------------------------------------------------------------------------


def make_db(path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO trades (amount) VALUES (1.5)")
    conn.close()


@pytest.fixture
def four_backups(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, keep_last=10))
    return guard.catalog, [guard.backup() for _ in range(4)]


def test_prune_through_the_cli_with_keep_last_from_a_config_file(
    four_backups, tmp_path, db_url, run_cli
):
    catalog, made = four_backups
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "keep_last": 2, "keep_daily": 0, "keep_weekly": 0,
    }}))

    dry = run_cli("prune", "--dry-run", "--json", "--config", str(config_file), in_process=True)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {"dry_run": True, "removed": [made[0].id, made[1].id]}
    assert len(catalog.manifests()) == 4

    pruned = run_cli("prune", "--config", str(config_file))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == [
        f"deleted {made[0].id}", f"deleted {made[1].id}", "deleted 2 backups"]
    assert [m.id for m in catalog.manifests()] == [made[2].id, made[3].id]
    for gone in made[:2]:
        assert not (catalog.directory / gone.file).exists()
        assert not (catalog.directory / f"{gone.id}.json").exists()
    for kept in made[2:]:
        assert (catalog.directory / kept.file).is_file()

    again = run_cli("prune", "--json", "--config", str(config_file), in_process=True)
    assert json.loads(again.stdout) == {"dry_run": False, "removed": []}


def test_prune_takes_yes_as_every_deleting_command_does(four_backups, tmp_path, db_url,
                                                        run_cli):
    """A script that passes --yes (or -y) to every command that deletes gets the same
    prune; prune never asks (cron runs it with no terminal)."""
    catalog, made = four_backups
    config_file = tmp_path / "bot.json"
    config_file.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "keep_last": 3, "keep_daily": 0, "keep_weekly": 0}}))
    pruned = run_cli("prune", "--yes", "--json", "--config", str(config_file))
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"dry_run": False, "removed": [made[0].id]}
    assert [m.id for m in catalog.manifests()] == [m.id for m in made[1:]]
    again = run_cli("prune", "-y", "--dry-run", "--config", str(config_file))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["would delete 0 backups"]


def test_each_backup_prunes_the_catalog(make_guard, db_path, db_url):
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, keep_last=2, keep_daily=0, keep_weekly=0))
    made = []
    for n in range(4):
        made.append(guard.backup())
        listed = [m.id for m in guard.catalog.manifests()]
        assert listed == [m.id for m in made[-2:]], f"after backup {n + 1}"
    data = sorted(p.name for p in guard.catalog.directory.glob("*.sqlite"))
    assert data == sorted(m.file for m in made[-2:])


def test_keep_daily_keeps_older_backups_of_other_days(make_guard, db_path, db_url):
    """Real backups whose manifests say they were made on earlier days."""
    make_db(db_path)
    maker = make_guard(Config(db_url=db_url, keep_last=10))
    old = [maker.backup() for _ in range(3)]
    guard = make_guard(Config(db_url=db_url, keep_last=1, keep_daily=3, keep_weekly=0))
    for days_ago, m in zip((5, 2, 1), old, strict=True):
        path = guard.catalog.manifest_path(m.id)
        body = json.loads(path.read_text())
        body["created_ts"] -= days_ago * DAY
        path.write_text(json.dumps(body))
    newest = guard.backup()  # prunes: 5 days ago is outside 3 days
    assert [m.id for m in guard.catalog.manifests()] == [old[1].id, old[2].id, newest.id]


# -- the week keep_weekly counts: ISO 8601, Monday 00:00:00 UTC --------------------------


def test_sunday_235959_and_monday_000000_utc_are_two_weeks():
    sunday, monday = utc(2025, 6, 15, 23, 59, 59), utc(2025, 6, 16, 0, 0, 0)
    backups = [manifest("sunday-last-second", sunday), manifest("monday-first-second", monday)]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=2),
                   now=monday + 3600)
    assert keep == {"sunday-last-second", "monday-first-second"}


def test_monday_000000_and_sunday_235959_utc_are_one_week():
    monday, sunday = utc(2025, 6, 16, 0, 0, 0), utc(2025, 6, 22, 23, 59, 59)
    backups = [manifest("monday", monday), manifest("sunday", sunday)]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=2),
                   now=sunday + 1)
    assert keep == {"sunday"}  # the same ISO week: only its newest stays


def test_weeks_across_the_year_boundary_are_iso_weeks():
    # 2020-W53 runs from Monday 2020-12-28 to Sunday 2021-01-03; 2021-W01 starts Monday
    # 2021-01-04. A calendar-year split would keep Thursday 2020-12-31 as well.
    backups = [
        manifest("thu-2020-12-31", utc(2020, 12, 31, 12)),
        manifest("sun-2021-01-03-last-second", utc(2021, 1, 3, 23, 59, 59)),
        manifest("mon-2021-01-04-first-second", utc(2021, 1, 4, 0, 0, 0)),
    ]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=3),
                   now=utc(2021, 1, 4, 12))
    assert keep == {"sun-2021-01-03-last-second", "mon-2021-01-04-first-second"}


def _documented_example() -> tuple[Retention, float, dict[str, tuple[float, str, bool]]]:
    """The worked keep_weekly example in docs/backups.rst: the policy, the time of the
    prune, and per backup line its time, its ISO week as written and whether it is kept."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "backups.rst").read_text(
        encoding="utf-8")
    policy = re.search(r"``keep_last = (\d+), keep_daily = (\d+), keep_weekly = (\d+)``", text)
    when = re.search(r"a prune on \w+ (\d{4})-(\d\d)-(\d\d)\s+(\d\d):(\d\d):(\d\d) UTC", text)
    assert policy, "docs/backups.rst lacks the worked keep_weekly example's policy"
    assert when, "docs/backups.rst lacks the time of the worked keep_weekly example's prune"
    lines = re.findall(r"^\s+(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) (\w+)\s+(\d{4}-W\d\d)"
                       r"\s+(kept|deleted)", text, re.MULTILINE)
    assert len(lines) >= 4, "the worked example lists too few backups"
    rows = {}
    for *fields, weekday, week, fate in lines:
        ts = utc(*map(int, fields))
        assert datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%A") \
            == weekday
        rows[f"{'-'.join(fields[:3])}T{''.join(fields[3:])}"] = (ts, week, fate == "kept")
    return Retention(*map(int, policy.groups())), utc(*map(int, when.groups())), rows


def test_the_documented_keep_weekly_example_is_what_prune_does():
    policy, now, rows = _documented_example()
    for name, (ts, week, _) in rows.items():
        year, number, _ = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc) \
            .isocalendar()
        assert week == f"{year}-W{number:02d}", f"{name}: the docs say {week}"
    keep = to_keep([manifest(name, ts) for name, (ts, _, _) in rows.items()], policy, now=now)
    assert keep == {name for name, (_, _, kept) in rows.items() if kept}


def test_prune_through_the_cli_keeps_sunday_and_monday_backups_of_two_weeks(
    make_guard, db_path, db_url, tmp_path, run_cli
):
    """Real backups whose manifests say when they were made, around 2024-12-30 (the
    Monday that starts ISO week 2025-W01); a real 'dbguard prune' process decides."""
    make_db(db_path)
    guard = make_guard(Config(db_url=db_url, keep_last=10))
    times = {"sun-2024-12-29-last-second": utc(2024, 12, 29, 23, 59, 59),
             "mon-2024-12-30-first-second": utc(2024, 12, 30, 0, 0, 0),
             "sun-2025-01-05-last-second": utc(2025, 1, 5, 23, 59, 59)}
    made = {}
    for name, ts in times.items():
        backup = guard.backup()
        path = guard.catalog.manifest_path(backup.id)
        body = json.loads(path.read_text())
        body["created_ts"] = ts
        path.write_text(json.dumps(body))
        made[name] = backup.id
    newest = guard.backup().id  # now: kept by keep_last
    config_file = tmp_path / "weekly.json"
    config_file.write_text(json.dumps({"dbguard": {
        "db_url": db_url, "keep_last": 1, "keep_daily": 0, "keep_weekly": 5200,
    }}))
    result = run_cli("prune", "--dry-run", "--json", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    # 2024-W52 keeps its Sunday; 2025-W01's Monday goes for the newer Sunday of its week.
    assert json.loads(result.stdout)["removed"] == [made["mon-2024-12-30-first-second"]]
    assert newest not in json.loads(result.stdout)["removed"]


def test_monthly_keeps_the_newest_verified_backup_of_each_utc_month_in_the_window():
    now = utc(2025, 6, 20, 12)
    backups = []
    for month in range(1, 7):  # January to June 2025, two a month
        backups += [manifest(f"m{month}-early", utc(2025, month, 3)),
                    manifest(f"m{month}-late", utc(2025, month, 17))]
    keep = to_keep(backups, Retention(keep_last=1, keep_daily=0, keep_weekly=0,
                                      keep_monthly=3), now=now)
    # 3 x 31 days before now reaches back to 2025-03-19: June, May and April's newest
    # (March 17 is 95 days old); June's newest is also keep_last.
    assert keep == {"m6-late", "m5-late", "m4-late"}


def test_the_age_limit_overrides_daily_weekly_and_monthly_but_not_keep_last():
    now = utc(2025, 6, 20, 12)
    backups = [manifest(f"d{ago}", now - ago * DAY - 60) for ago in range(40)]
    backups.append(manifest("newest-unverified", now - 30, verified=False))
    keep = to_keep(backups, Retention(keep_last=2, keep_daily=30, keep_weekly=8,
                                      keep_monthly=12, max_age_days=10), now=now)
    # keep_last: the two newest (one unverified); then one a day up to 10 days old
    assert keep == {"newest-unverified", *(f"d{ago}" for ago in range(10))}
    old = [manifest("ancient", now - 400 * DAY)]
    assert to_keep(old, Retention(keep_last=1, max_age_days=10), now=now) == {"ancient"}
