"""Profiles for a CLI or a desktop host: the profiles file with the guarded operations
on it (switching the active profile, deleting a profile with its data), and bringing a
backup of another profile into this database's catalog.

The file itself (where it is, reading, checking, writing) is
:class:`dbguard_plugin.settings.profile_file.ProfileFile`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.catalog.codecs import file_digest
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Repository
from dbguard_plugin.core import generation
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines import verify_or_refuse
from dbguard_plugin.engines.sqlite.backup import NothingToBackUp, Progress
from dbguard_plugin.engines.sqlite.stored import opened_backup
from dbguard_plugin.errors import ConfigError, DbGuardError, UnsafePathError, VerificationError
from dbguard_plugin.events import Operation
from dbguard_plugin.files import fsync_dir, open_private, replace, write_atomic
from dbguard_plugin.location import DatabaseLocation, locate
from dbguard_plugin.settings.config import Config, resolve
from dbguard_plugin.settings.profile_file import Contents, ProfileFile
from dbguard_plugin.settings.profiles import Profile, ProfileNotFound, validate_name

_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class SwitchOutcome:
    previous: str | None
    active: str
    #: The pre-switch backup of the previous profile's database ("" if there was none).
    backup_id: str
    database: str
    previous_database: str
    changed: bool
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class DeleteOutcome:
    name: str
    #: Files and directories removed with ``delete_data``; empty otherwise.
    deleted: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "deleted": list(self.deleted), "kept": list(self.kept)}


class ProfileStore(ProfileFile):
    """The profiles of one bot config (or of the user), with the same checks as the CLI.

    ::

        store = ProfileStore.locate("user_data/config.json")
        for profile in store.list():
            print(profile.name, profile.kind, profile.name == store.active_name())
        store.create(Profile("paper", kind="testing", db_url="sqlite:////srv/paper.sqlite"))
        store.switch("paper")   # guarded, backs up first; VetoedError with every reason
    """

    def config(self, name: str | None = None, db_url: str | None = None) -> Config:
        """dbguard's settings under profile *name* (default: the active one)."""
        return resolve(self.config_path, db_url, name)

    def guard(self, name: str | None = None, db_url: str | None = None) -> Guard:
        """A Guard for profile *name*'s database (default: the active profile's)."""
        return Guard(self.config(name, db_url))

    # -- changing ----------------------------------------------------------------------

    def delete(self, name: str, *, force: bool = False, delete_data: bool = False,
               who: str | None = None) -> DeleteOutcome:
        """Remove profile *name* from the file. Never the active profile; a production
        profile only with *force*. Its database and backups stay unless *delete_data*."""
        validate_name(name)
        with self._locked():
            contents = self.read()
            profile = contents.find(name)
            if profile is None:
                self.get(name)
                raise AssertionError  # pragma: no cover
            if name == contents.active:
                raise ConfigError(f"profile {name} is the active profile and cannot be "
                                  "deleted; switch to another one first "
                                  "('dbguard profile switch NAME')")
            if profile.environment == "production" and not force:
                raise ConfigError(f"profile {name} is a production profile; deleting it "
                                  "needs --force (force=True)")
            deleted, kept = (self._delete_data(profile, contents, force, who) if delete_data
                             else ((), self._data_of(profile)))
            self._write(dataclasses.replace(contents, profiles=tuple(
                p for p in contents.profiles if p.name != name)))
        return DeleteOutcome(name, deleted, kept)

    def switch(
        self,
        name: str,
        *,
        db_url: str | None = None,
        force: bool = False,
        who: str | None = None,
        guard: Guard | None = None,
        progress: Progress | None = None,
    ) -> SwitchOutcome:
        """Make *name* the active profile, guarded like any replacement.

        The previous profile's database must have no order in flight (and, by its
        strictness, no active session); a ``pre-switch`` backup of it is taken; the file
        is then rewritten atomically; hosts are told through ``dbguard_refresh`` and the
        ``profile-switched`` signal. *guard* is the host's own Guard for the previous
        profile's database, if it has one: its orders count as in flight.
        Raises :class:`~dbguard_plugin.errors.VetoedError` with every reason.
        """
        clock = time.monotonic()
        self.get(name)
        previous = self.read().active
        target_config = self.config(name, db_url)
        if not target_config.db_url:
            raise ConfigError(f"profile {name} has no database: set one with 'dbguard "
                              f"profile update {name} --db-url URL' or give --config/--db")
        new_db = locate(target_config.db_url, target_config.state_dir)
        if previous == name:
            return SwitchOutcome(previous, name, "", new_db.redacted, new_db.redacted, False,
                                 (f"profile {name} is already active",))
        own = guard is None
        if guard is None:
            current = self.config(previous, db_url)
            # Before any profile is active and without a database in the bot config,
            # the only database to guard is the new profile's own.
            guard = Guard(current if current.db_url else target_config)
        try:
            warnings = _switch_warnings(previous, name, guard, new_db)
            backup_id = self._switch_guarded(guard, previous, name, new_db, warnings,
                                             force=force, who=who, progress=progress)
            return SwitchOutcome(previous, name, backup_id, new_db.redacted,
                                 guard.location.redacted, True, tuple(warnings),
                                 round(time.monotonic() - clock, 3))
        finally:
            if own:
                guard.close()

    def _switch_guarded(self, guard: Guard, previous: str | None, name: str,
                        new_db: DatabaseLocation, warnings: list[str], *, force: bool,
                        who: str | None, progress: Progress | None) -> str:
        """The switch itself, under the operation's lease: the pre-switch backup, the
        file, the announcement. Returns the backup's id ("" when there was nothing)."""
        with guard.operation(Operation.PROFILE_SWITCH, force=force, who=who) as verdict:
            warnings += verdict.warnings
            reach("switch:locked")
            try:
                backup_id = guard.backup("pre-switch", progress=progress).id
            except NothingToBackUp:
                backup_id = ""
            reach("switch:backed-up")
            self._activate(previous, name)
            reach("switch:written")
            # A bot on the previous database notices on its next tick and refreshes.
            generation.bump(guard.location.state_dir, "profile_switch")
            guard.pm.hook.dbguard_refresh(guard=guard, operation=Operation.PROFILE_SWITCH)
            signals.notify(signals.profile_switched, guard, previous=previous,
                           profile=name, backup_id=backup_id, database=new_db.redacted)
            reach("switch:done")
        return backup_id

    def _activate(self, previous: str | None, name: str) -> None:
        """Make *name* the active profile in the file, unless another process changed
        what the switch was decided on."""
        with self._locked():
            now = self.read()
            if now.active != previous:
                raise DbGuardError(
                    f"{self.path}: the active profile changed to {now.active} while "
                    "this switch ran; nothing was switched, try again")
            if now.find(name) is None:
                raise ProfileNotFound(f"profile {name} was deleted while this "
                                      "switch ran; nothing was switched")
            self._write(dataclasses.replace(now, active=name))

    # -- a profile's data ----------------------------------------------------------------

    def _data_of(self, profile: Profile) -> tuple[str, ...]:
        """The profile's own database file and catalog, where they exist."""
        try:
            config = self.config(profile.name)
        except DbGuardError:
            return ()
        found = []
        if profile.db_url and config.db_url:
            path = locate(config.db_url, config.state_dir).sqlite_path
            if path is not None and path.exists():
                found.append(str(path))
        if config.backup_dir and Path(config.backup_dir).exists():
            found.append(config.backup_dir)
        return tuple(found)

    def _delete_data(self, profile: Profile, contents: Contents, force: bool,
                     who: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Delete the profile's own database and catalog, guarded like any deletion."""
        config = self.config(profile.name)
        if not profile.db_url or not config.db_url:
            raise ConfigError(
                f"profile {profile.name} uses the bot config's database, which other "
                "profiles use too; dbguard deletes only a database a profile names itself "
                "(its own db_url). Delete without --delete-data")
        location = locate(config.db_url, config.state_dir)
        if location.sqlite_path is None:
            raise ConfigError(f"{location.redacted}: dbguard deletes only SQLite files; drop "
                              "a server database with the server's own tools")
        for other in contents.profiles:
            if other.name == profile.name:
                continue
            try:
                theirs = self.config(other.name)
                same_db = bool(theirs.db_url) and locate(
                    str(theirs.db_url), theirs.state_dir).identity == location.identity
            except DbGuardError:
                continue  # a profile without a usable database shares nothing
            if same_db or _same_directory(theirs.backup_dir, config.backup_dir):
                raise ConfigError(
                    f"profile {other.name} uses the same database or backup directory "
                    f"as {profile.name}; nothing was deleted")
        deleted: list[str] = []
        guard = Guard(config)
        try:
            with guard.operation(Operation.DELETE, force=force, who=who):
                catalog = guard.catalog.directory
                if catalog.exists():
                    info = os.lstat(catalog)
                    if stat.S_ISLNK(info.st_mode):
                        raise UnsafePathError(f"{catalog} is a symlink; nothing was deleted")
                    guard.catalog.prepare()  # refuses a directory of another database
                    shutil.rmtree(catalog)
                    deleted.append(str(catalog))
                for suffix in ("", *_SIDECARS):
                    path = Path(f"{location.sqlite_path}{suffix}")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                        deleted.append(str(path))
                fsync_dir(location.sqlite_path.parent)
        finally:
            guard.close()
        return tuple(deleted), ()


def _switch_warnings(previous: str | None, name: str, guard: Guard,
                     new_db: DatabaseLocation) -> list[str]:
    """What the operator should know about the database *name* switches to."""
    warnings = []
    # Before the first switch there is no previous profile to share a database with:
    # the new profile taking the bot config's database is the usual start.
    if previous is not None and guard.location.identity == new_db.identity:
        warnings.append(
            f"profiles {previous} and {name} use the same database "
            f"{new_db.redacted}; give {name} its own with 'dbguard profile update "
            f"{name} --db-url URL'")
    if new_db.sqlite_path is not None and not new_db.sqlite_path.exists():
        warnings.append(f"{new_db.sqlite_path} does not exist yet; the bot creates "
                        "it when it starts")
    return warnings


def _same_directory(one: str | None, other: str | None) -> bool:
    """Whether two configured directories are one, through any symlink or spelling."""
    if one is None or other is None:
        return one == other
    return os.path.realpath(os.path.expanduser(one)) == \
        os.path.realpath(os.path.expanduser(other))


def _copy_chunks(source: Catalog, target: Catalog, manifest: Manifest) -> Manifest:
    """A repository backup into *target*'s repository (with the lock held): its chunks
    reassembled and checked, then stored there (only those the target lacks)."""
    with opened_backup(source, manifest) as plain:
        stored = Repository.of(target.directory).store(plain, manifest.compression)
    if stored.raw_size != manifest.raw_size:
        raise VerificationError(f"the copy of backup {manifest.id} in {target.directory} "
                                "does not match its manifest; nothing was copied")
    copied = dataclasses.replace(manifest, chunk_list=stored.chunk_list,
                                 chunk_count=stored.chunk_count, sha256=stored.chunk_list,
                                 size=stored.size, added=stored.added,
                                 chunk_size=Repository.of(target.directory).chunk_size)
    target.write_manifest(copied)
    return copied


def copy_backup(source: Catalog, target: Catalog, manifest: Manifest) -> Manifest:
    """Copy a backup between catalogs: checked, fsynced, renamed, its manifest last."""
    if os.path.realpath(source.directory) == os.path.realpath(target.directory):
        return manifest
    verify_or_refuse(source, manifest, "quick_check", record=False, nothing_was="copied")
    with target.locked():
        existing = target.manifest_path(manifest.id)
        if existing.exists():
            if Manifest.read(existing).sha256 == manifest.sha256:
                return manifest
            raise DbGuardError(f"{target.directory} already holds a different backup "
                               f"{manifest.id}; nothing was copied")
        if manifest.storage == "repository":
            return _copy_chunks(source, target, manifest)
        tmp = target.directory / f"{TMP_PREFIX}{manifest.file}"
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as out, open(source.data_path(manifest), "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if file_digest(tmp) != (manifest.size, manifest.sha256):
            os.unlink(tmp)
            raise VerificationError(f"the copy of backup {manifest.id} in {target.directory} "
                                    "does not match its manifest; nothing was copied")
        replace(tmp, target.data_path(manifest))
        fsync_dir(target.directory)
        write_atomic(existing, manifest.to_json(), fsync=True)
    return manifest
