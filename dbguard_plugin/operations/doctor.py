"""``dbguard doctor``: what an operator should know before going live, with the fix."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dbguard_plugin.catalog.repository import Repository
from dbguard_plugin.engines.sqlite.backup import sqlite_uri

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "message": self.message}


def diagnose(guard: Guard) -> list[Finding]:
    found = [_identity(guard), _journal_mode(guard), _busy_timeout(guard), _free_space(guard)]
    found += _permissions(guard)
    found.append(_newest_backup(guard))
    for damaged in (_damaged_manifests(guard), _damaged_indexes(guard)):
        if damaged is not None:
            found.append(damaged)
    return found


def _identity(guard: Guard) -> Finding:
    """The one file every spelling of the database reaches, or why there is none."""
    problem = guard.database_problem()
    if problem is not None:
        return Finding("database file", FAIL, problem)
    shown = guard.location.redacted
    if guard.location.identity not in shown:
        return Finding("database file", OK, f"{shown} is {guard.location.identity}")
    return Finding("database file", OK, guard.location.identity)


def _journal_mode(guard: Guard) -> Finding:
    path = guard.location.sqlite_path
    if path is None:
        return Finding("journal mode", OK, f"{guard.location.backend}: not a SQLite file")
    if not path.is_file():
        return Finding("journal mode", FAIL, f"{path}: no such database file; check db_url")
    try:
        # read-write (read-only where the file is write-protected): a hot journal that
        # a killed writer left is rolled back as SQLite does, not reported as damage
        conn = sqlite3.connect(sqlite_uri(path, "rw"), uri=True, timeout=5)
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Finding("journal mode", FAIL, f"{path}: cannot read it: {exc}")
    if mode == "wal":
        return Finding("journal mode", OK, "WAL: a backup never locks out the bot's writes")
    size_gib = path.stat().st_size / 2**30
    return Finding(
        "journal mode", WARN,
        f"{mode}: a backup blocks the bot's writes for the whole copy (about 2 s per GiB "
        f"measured here; this database is {size_gib:.2f} GiB). Switch to WAL with the bot stopped: "
        f"sqlite3 '{path}' 'PRAGMA journal_mode=WAL' (freqtrade sets WAL itself on start)",
    )


def _busy_timeout(guard: Guard) -> Finding:
    seconds = guard.config.busy_timeout
    if seconds < 5:
        return Finding("busy timeout", WARN,
                       f"busy_timeout = {seconds:g} s: dbguard gives up on a locked database "
                       "quickly; 30 s is the default")
    return Finding("busy timeout", OK, f"dbguard waits up to {seconds:g} s for a locked database")


def _free_space(guard: Guard) -> Finding:
    path = guard.location.sqlite_path
    size = path.stat().st_size if path is not None and path.is_file() else 0
    where = guard.catalog.directory
    probe = where if where.exists() else _existing_parent(where)
    free = shutil.disk_usage(probe).free
    mib = 2**20
    text = f"{free / mib:,.0f} MiB free at {probe} for a {size / mib:,.1f} MiB database"
    if free < size * 1.1 + 16 * mib:
        return Finding("free space", FAIL, text + ": not enough for one backup; free space or "
                       "set backup_dir to a larger disk")
    if free < size * 3:
        return Finding("free space", WARN, text + ": room for fewer than three backups")
    return Finding("free space", OK, text)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _permissions(guard: Guard) -> list[Finding]:
    found: list[Finding] = []
    loose: list[str] = []
    for directory in (guard.location.state_dir, guard.catalog.directory):
        if not directory.exists():
            continue
        info = os.lstat(directory)
        if stat.S_ISLNK(info.st_mode):
            found.append(Finding("permissions", FAIL, f"{directory} is a symlink; dbguard "
                                 "refuses it: point state_dir/backup_dir at a real directory"))
            continue
        if info.st_mode & 0o077:
            loose.append(f"chmod 700 '{directory}'")
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                loose.append(f"chmod 600 '{entry.path}'")
    if loose:
        found.append(Finding("permissions", WARN,
                             "readable by others: " + "; ".join(loose[:5])
                             + (f" (and {len(loose) - 5} more)" if len(loose) > 5 else "")))
    elif not found:
        found.append(Finding("permissions", OK, "catalog and lease files are private "
                             "(0700 directories, 0600 files)"))
    return found


def _newest_backup(guard: Guard) -> Finding:
    newest = guard.catalog.newest_verified()
    if newest is None:
        return Finding("newest backup", FAIL, f"no verified backup in {guard.catalog.directory}:"
                       " run 'dbguard backup' before going live")
    age = time.time() - newest.created_ts
    text = f"{newest.id} ({newest.reason}), {_age(age)} old"
    if age > 86_400:
        return Finding("newest backup", WARN, text + ": older than a day")
    return Finding("newest backup", OK, text)


def _damaged_manifests(guard: Guard) -> Finding | None:
    """Manifests dbguard leaves unused (a wrong-typed or missing field, bad JSON): only
    an operator can tell whether to repair or remove them."""
    damaged = guard.catalog.damaged()
    if not damaged:
        return None
    shown = "; ".join(f"{d.file}: {d.why}" for d in damaged[:3])
    more = f" (and {len(damaged) - 3} more)" if len(damaged) > 3 else ""
    return Finding(
        "damaged manifests", WARN,
        f"{len(damaged)} manifest(s) in {guard.catalog.directory} are damaged and never used "
        f"(not listed, restored or pruned; their data files are kept): {shown}{more}. "
        "Repair or move them aside ('dbguard backups' lists them)",
    )


def _damaged_indexes(guard: Guard) -> Finding | None:
    """Pack indexes of the repository that cannot be used: backups go on (their chunks
    are stored again) but the ones that needed them fail, and only an operator can
    move the pack aside."""
    repository = Repository.of(guard.catalog.directory)
    damaged = list(repository.damaged_indexes().values())
    if not damaged:
        return None
    more = f" (and {len(damaged) - 3} more)" if len(damaged) > 3 else ""
    return Finding(
        "damaged pack indexes", WARN,
        f"{len(damaged)} pack index(es) in {repository.directory} cannot be used: "
        f"{'; '.join(damaged[:3])}{more}. New backups store their chunks again; "
        "'dbguard verify --all' names the backups that still need them. Once no backup "
        "you keep does, move each index and its .pack out of the repository",
    )


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"
