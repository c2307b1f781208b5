"""``dbguard move``: change where a SQLite database lives, guarded, verified, crash-safe.

The copy is a consistent snapshot (one read transaction around the backup API) to a
``.tmp-`` name beside the new place, checked against the snapshot's own facts, fsynced
and renamed into place; only then is the configuration switched, atomically. The old
file stays until ``--delete-old`` (and never goes while a session is active), so a move
that fails at any point leaves the old database in use and no stray file at the new place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dbguard_plugin import signals
from dbguard_plugin.catalog import DEFAULT_DIR, MARKER, Catalog, journal
from dbguard_plugin.core import audit, generation
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.sqlite import evidence
from dbguard_plugin.engines.sqlite.backup import BackupSettings, Progress, sqlite_uri
from dbguard_plugin.engines.sqlite.facts import check, read_facts
from dbguard_plugin.engines.sqlite.snapshot import room_needed
from dbguard_plugin.errors import ConfigError, DbGuardError, UnsafePathError, VerificationError
from dbguard_plugin.events import Operation
from dbguard_plugin.files import fsync_dir, open_private, private_dir, replace, write_atomic
from dbguard_plugin.location import identity_of, locate, redact
from dbguard_plugin.settings.profile_file import ProfileFile

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

SIDECARS = ("-wal", "-shm", "-journal")
#: A quoted SQLite URL in a JSON or TOML config file: the quote, then the URL.
_QUOTED_URL = re.compile(r"""(["'])(sqlite[^"'\s]*://[^"'\n]*)\1""")


class MoveError(DbGuardError):
    """A move failed; the old database is still the one in use."""


@dataclass(frozen=True)
class MoveOutcome:
    old_path: str
    new_path: str
    new_url: str
    config_updated: bool
    backups_moved: bool
    deleted_old: bool
    duration_s: float
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "notes": list(self.notes)}


def move(
    guard: Guard,
    new_path: str,
    *,
    config_path: str | None = None,
    delete_old: bool = False,
    force: bool = False,
    who: str | None = None,
    progress: Progress | None = None,
) -> MoveOutcome:
    clock = time.monotonic()
    old = guard.location.sqlite_path
    if old is None:
        raise MoveError(f"{guard.location.redacted}: only SQLite files can be moved")
    if not old.is_file():
        raise MoveError(f"{old}: no database file to move; check --db / db_url")
    new = _validate_target(old, new_path)
    new_url = guard.location.url.set(database=str(new)).render_as_string(hide_password=False)
    config_file = Path(config_path).absolute() if config_path else None
    profiles = ProfileFile.locate(config_path)
    _check_namers_writable(config_file, profiles, guard.location.identity)
    with guard.operation(Operation.MOVE, force=force, who=who):
        reach("move:locked")
        _check_room(old, new)
        intent = journal.Intent(
            operation="move", step="copying", database=guard.location.redacted,
            new_path=str(new), tmp_path=str(new.with_name(f".tmp-dbguard-move-{new.name}")),
            config_path=str(config_file or ""), old_url=guard.config.db_url or "",
            new_url=new_url, profiles_path=str(profiles.path),
        )
        journal.write(guard.location.state_dir, intent)
        reach("move:journal-written")
        guard.pm.hook.dbguard_release_connections(guard=guard, operation=Operation.MOVE)
        _copy_into_place(guard, intent, old, new, progress)
        switching = intent.at("switching")
        journal.write(guard.location.state_dir, switching)
        new_state = locate(new_url).state_dir
        private_dir(new_state)
        journal.write(new_state, switching)  # a command already on the new config finds it
        reach("move:journaled")
        config_updated, backups_moved, notes = _switch(guard, switching)
        reach("move:configured")
        deleted = _delete_old(guard, old, notes) if delete_old else False
        journal.clear(new_state)
        journal.clear(guard.location.state_dir)
        reach("move:done")
        generation.bump(guard.location.state_dir, "move")
        guard.pm.hook.dbguard_refresh(guard=guard, operation=Operation.MOVE)  # lease held
    signals.notify(signals.moved, guard, old_path=old, new_path=new,
                   new_url=redact(new_url), deleted_old=deleted)
    return MoveOutcome(str(old), str(new), redact(new_url), config_updated, backups_moved,
                       deleted, round(time.monotonic() - clock, 3), tuple(notes))


def _check_room(old: Path, new: Path) -> None:
    need = old.stat().st_size
    free = shutil.disk_usage(new.parent).free
    if free < room_needed(need):
        raise MoveError(f"{new.parent}: {free / 2**20:,.0f} MiB free, the database needs "
                        f"{need / 2**20:,.0f} MiB; nothing was changed")


def _copy_into_place(guard: Guard, intent: journal.Intent, old: Path, new: Path,
                     progress: Progress | None) -> None:
    """The verified copy, renamed to the new place; on any failure neither the copy nor
    anything at the new place is left, and the journal is cleared."""
    tmp = Path(intent.tmp_path)
    try:
        _copy_verified(old, tmp, guard.config.busy_timeout, progress)
        os.chmod(tmp, private_mode(old.stat().st_mode))
        reach("move:copied")
        # From here the new path may hold the copy: undoing must remove it too (it was
        # checked not to exist before, so nothing of the operator's is there).
        journal.write(guard.location.state_dir, intent.at("renaming"))
        replace(tmp, new)
        fsync_dir(new.parent)
        reach("move:renamed")
    except BaseException:
        _remove_with_sidecars(tmp)
        _remove_with_sidecars(new)
        journal.clear(guard.location.state_dir)
        raise


def _delete_old(guard: Guard, old: Path, notes: list[str]) -> bool:
    """--delete-old: remove the old file, unless a session still uses it (*notes* says
    why it was kept)."""
    if not guard.lease.probe().session_free:
        notes.append(f"kept {old}: a trading session is still active on it")
        return False
    deleted = False
    try:
        _remove_with_sidecars(old)
        fsync_dir(old.parent)
        deleted = True
    except OSError as exc:  # Windows: the old file is still open somewhere
        notes.append(f"kept {old}: it could not be deleted ({exc.strerror})")
    reach("move:old-deleted")
    return deleted


def recover(guard: Guard, intent: journal.Intent) -> str:
    """Finish a move whose copy was in place, undo one whose copy was not. A switch is
    finished only when that leaves no committed row behind (see _place_in_use); when
    that cannot be told, the journal is marked undecided and "" returned."""
    tmp = Path(intent.tmp_path)
    new = Path(intent.new_path)
    if intent.step in ("copying", "renaming"):
        _remove_with_sidecars(tmp)
        if intent.step == "renaming":
            _remove_with_sidecars(new)
        journal.clear(guard.location.state_dir)
        return (f"undid the interrupted move to {new}: the configuration still named the old "
                "place, so the database stays where it was and the copy is gone")
    place, found = _place_in_use(guard, intent)
    if place == "old":
        forget(intent)
        journal.clear(guard.location.state_dir)
        with contextlib.suppress(OSError):  # only when nothing but the journal was there
            locate(intent.new_url).state_dir.rmdir()
        return (f"undid the interrupted move to {new}: {found}, so the database stays "
                f"where it was; the copy at {new} is kept: delete it when you no longer "
                "need it")
    if place != "new":
        journal.write(guard.location.state_dir, dataclasses.replace(intent, undecided=found))
        return ""
    _switch(guard, intent)
    forget(intent)
    journal.clear(guard.location.state_dir)
    kept = f"; {found}, and it is kept as it is" if found else ""
    return f"finished the interrupted move to {new}: the database now lives there{kept}"


def forget(intent: journal.Intent) -> None:
    """Remove the journal of this move from both places' dbguard directories."""
    for url in (intent.new_url, intent.old_url):
        if not url:
            continue
        state_dir = locate(url).state_dir
        there = journal.read(state_dir) if state_dir.is_dir() else None
        if there is not None and (there.pid, there.started) == (intent.pid, intent.started):
            journal.clear(state_dir)


def _place_in_use(guard: Guard, intent: journal.Intent) -> tuple[str, str]:
    """Where a switching move must leave the database: ("new", note) when finishing it
    leaves no committed row behind (the old file is gone, holds exactly what the copy
    holds, or is no longer what the configuration names), ("old", why) when the old
    place is still named and its database changed after the copy, ("", what was
    found) when that cannot be told."""
    old = locate(intent.old_url).sqlite_path if intent.old_url else None
    new = Path(intent.new_path)
    if old is None or not old.exists():
        return "new", ""
    before = evidence.of_database(old, guard.config.busy_timeout)
    after = evidence.of_database(new, guard.config.busy_timeout) if new.exists() else \
        evidence.Found(None, f"the copy at {new} is gone")
    if before.same_as(after):
        return "new", ""
    if before.digest is None or after.digest is None:
        return "", "; ".join(s.problem for s in (before, after) if s.digest is None)
    changed = f"{old} no longer holds what the copy at {new} holds"
    named = _named_place(guard, intent)
    if named == "new":
        return "new", changed
    if named == "old":
        return "old", f"{changed}, and it is still the database in use"
    return "", f"{changed}, and which of them is in use cannot be told"


def _named_place(guard: Guard, intent: journal.Intent) -> str:
    """Which place the bot uses: the one its config file names, else the one this
    command was given; "" when the config names both or neither."""
    old_identity, new_identity = identity_of(intent.old_url), identity_of(intent.new_url)
    if intent.config_path and os.path.isfile(intent.config_path):
        text = Path(intent.config_path).read_text(encoding="utf-8")
        names = {place for place, identity in (("old", old_identity), ("new", new_identity))
                 if _config_spellings(text, identity)}
        return names.pop() if len(names) == 1 else ""
    here = guard.location.identity
    return "new" if here == new_identity else "old" if here == old_identity else ""


def _validate_target(old: Path, new_path: str) -> Path:
    if not new_path or "\x00" in new_path or any(ord(c) < 32 for c in new_path):
        raise UnsafePathError(f"{new_path!r} is not a usable path for the database")
    new = Path(os.path.abspath(os.path.expanduser(new_path)))
    if new.is_dir():
        new = new / old.name
    if new == old or os.path.realpath(new) == os.path.realpath(old):
        raise ConfigError(f"{new} is where the database already is")
    for candidate in [new] + [new.with_name(new.name + s) for s in SIDECARS]:
        if os.path.lexists(candidate):
            raise ConfigError(f"{candidate} already exists; dbguard never overwrites a file "
                              "when moving: choose another name or remove it")
    if not new.parent.is_dir():
        raise ConfigError(f"{new.parent} does not exist; create the directory first")
    if stat.S_ISLNK(os.lstat(new.parent).st_mode):
        raise UnsafePathError(f"{new.parent} is a symlink; give the real directory")
    # Known by its resolved directory, as every database is: a link further up the path
    # must not give the new place a second identity.
    return Path(os.path.realpath(new.parent)) / new.name


def private_mode(old_mode: int) -> int:
    """The moved file's mode: 0600 (a database of positions and orders is nobody else's
    to read), or the old file's owner bits when they were more restrictive (0400 stays)."""
    return stat.S_IMODE(old_mode) & 0o600


def _copy_verified(old: Path, tmp: Path, busy_timeout: float,
                   progress: Progress | None) -> None:
    """A consistent copy of *old* at *tmp* (0600), checked against the snapshot's facts."""
    _remove_with_sidecars(tmp)
    os.close(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    settings = BackupSettings(busy_timeout=busy_timeout)
    src = sqlite3.connect(sqlite_uri(old, "rw"), uri=True, timeout=busy_timeout,
                          isolation_level=None)
    try:
        src.execute("BEGIN")
        expected = read_facts(src)  # inside the read transaction: the snapshot's own facts
        dst = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            def step(_status: int, remaining: int, total: int) -> None:
                reach("move:copying")
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=settings.step_pages, progress=step, sleep=0)
        finally:
            dst.close()
        src.execute("COMMIT")
    except sqlite3.Error as exc:
        raise MoveError(f"{old}: copy failed ({exc}); nothing was changed") from None
    finally:
        src.close()
    conn = sqlite3.connect(sqlite_uri(tmp, "rw"), uri=True)
    try:
        problems = check(conn, "integrity_check")
        facts = read_facts(conn, expected.journal_mode)
    finally:
        conn.close()  # the last connection: SQLite checkpoints and removes tmp's -wal
    if problems or facts.tables != expected.tables or (
        facts.schema_fingerprint != expected.schema_fingerprint
    ):
        raise VerificationError(f"{tmp}: the copy does not match {old} "
                                f"({'; '.join(problems[:3]) or 'rows or schema differ'})")
    for suffix in SIDECARS:
        if os.path.exists(f"{tmp}{suffix}"):
            raise MoveError(f"{tmp}{suffix} is still there; the copy is not self-contained")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _switch(guard: Guard, intent: journal.Intent) -> tuple[bool, bool, list[str]]:
    """Point everything that names the database at the new place (idempotent, so the
    recovery of a move killed half way through simply runs it again)."""
    notes: list[str] = []
    old_identity = identity_of(intent.old_url) if intent.old_url else ""
    config_updated = False
    if intent.config_path:
        config_updated = _rewrite_config(Path(intent.config_path), old_identity,
                                         intent.new_url)
        if not config_updated:
            notes.append(f"{intent.config_path} does not name {redact(intent.old_url)}; "
                         f"use --db {redact(intent.new_url)} from now on")
    renamed = _repoint_profiles(intent, old_identity)
    if renamed:
        notes.append(f"profiles {', '.join(renamed)} in {intent.profiles_path} now name "
                     f"{redact(intent.new_url)}")
    elif not intent.config_path:
        notes.append(f"no --config given: use --db {redact(intent.new_url)} from now on")
    new_state = locate(intent.new_url).state_dir
    old_state = locate(intent.old_url).state_dir if intent.old_url else None
    backups_moved = False
    if old_state is not None:
        _carry_state(old_state, new_state)
        backups_moved, more = _carry_catalogs(old_state, new_state, intent.new_path)
        notes += more
    if guard.config.backup_dir and (Path(guard.config.backup_dir) / MARKER).exists():
        with contextlib.suppress(OSError):
            # adopt() keeps the old place listed: its backups stay this database's
            Catalog(Path(guard.config.backup_dir)).adopt(intent.new_path)
    return config_updated, backups_moved, notes


def _carry_catalogs(old_state: Path, new_state: Path, new_path: str) -> tuple[bool, list[str]]:
    """Move every catalog kept beside the old database (``backups`` and each profile's
    ``backups-NAME``) beside the new one, and record the new identity in each."""
    moved = False
    notes: list[str] = []
    names = sorted(n for n in os.listdir(old_state) if n == DEFAULT_DIR or
                   n.startswith(f"{DEFAULT_DIR}-")) if old_state.is_dir() else []
    for name in names:
        source, target = old_state / name, new_state / name
        if not source.is_dir() or source.is_symlink() or target.exists():
            continue
        try:
            os.rename(source, target)
            fsync_dir(new_state)
        except OSError:  # another disk: the catalog stays, adopted by the new place
            Catalog(source).adopt(new_path)
            notes.append(f"backups stay in {source} (another disk): set "
                         f"backup_dir = \"{source}\" to keep using them")
            continue
        moved = True
    for name in (DEFAULT_DIR, *(n for n in names if n != DEFAULT_DIR)):
        if (new_state / name / MARKER).exists():
            with contextlib.suppress(OSError):
                Catalog(new_state / name).adopt(new_path)
                moved = True
    return moved, notes


def _repoint_profiles(intent: journal.Intent, old_identity: str) -> list[str]:
    """Point every profile that names the old database at the new one."""
    if not intent.profiles_path or not os.path.exists(intent.profiles_path):
        return []
    store = ProfileFile(Path(intent.profiles_path))
    names = _profiles_naming(store, old_identity)
    for name in names:
        store.update(name, db_url=intent.new_url)
    return names


def _profiles_naming(store: ProfileFile, identity: str) -> list[str]:
    return [p.name for p in store.list() if p.db_url and identity_of(p.db_url) == identity]


def _config_spellings(text: str, identity: str) -> list[str]:
    """Every quoted SQLite URL in a config file's text that names the database."""
    found = (m.group(2) for m in _QUOTED_URL.finditer(text))
    return list(dict.fromkeys(u for u in found if identity_of(u) == identity))


def _check_namers_writable(config: Path | None, profiles: ProfileFile,
                           identity: str) -> None:
    """Refuse, before anything is copied, a move that could not update every file that
    names the database: afterwards the bot and dbguard would disagree on where it is."""
    namers: list[Path] = []
    if config is not None and config.is_file() and _config_spellings(
        config.read_text(encoding="utf-8"), identity
    ):
        namers.append(config)
    if profiles.exists and _profiles_naming(profiles, identity):
        namers.append(profiles.path)
    for path in namers:
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            raise MoveError(f"{path} names the database but cannot be rewritten (no write "
                            f"permission on it or on {path.parent}); nothing was changed: "
                            "make it writable or run the move as its owner")


def _carry_state(old_state: Path, new_state: Path) -> None:
    """Bring the replacement history and the audit log along: rollback and pinning must
    keep working at the new place."""
    private_dir(new_state)
    for name in (generation.LAST, generation.GENERATION, audit.AUDIT_LOG):
        source, target = old_state / name, new_state / name
        if source.is_file() and not target.exists():
            shutil.copy2(source, target)
            os.chmod(target, 0o600)


def _rewrite_config(path: Path, old_identity: str, new_url: str) -> bool:
    """Replace every URL of the database in the config file's text, atomically, keeping
    the rest of the file (comments, order, formatting) exactly as the operator wrote it.
    True when the file names the new place (now or already)."""
    text = path.read_text(encoding="utf-8")
    spellings = _config_spellings(text, old_identity) if old_identity else []
    if not spellings:
        return new_url in text  # done already (recovery after the switch), or not named
    for spelling in spellings:
        for quote in ('"', "'"):
            text = text.replace(f"{quote}{spelling}{quote}", f"{quote}{new_url}{quote}")
    mode = stat.S_IMODE(path.stat().st_mode)
    write_atomic(path, text.encode("utf-8"), fsync=True)
    os.chmod(path, mode)
    return True


def _remove_with_sidecars(path: Path) -> None:
    for candidate in [str(path)] + [f"{path}{s}" for s in SIDECARS]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)
