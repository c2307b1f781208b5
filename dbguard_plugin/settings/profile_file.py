"""The profiles file, and the operations on profiles that a CLI or a desktop host runs.

The file is TOML: ``active = "NAME"`` and one ``[profiles.NAME]`` table per profile. It
lives beside the bot config (``dbguard-profiles.toml`` in the directory of
``--config``) when there is one, else in the user's config directory (the platform's
convention, ``profiles.toml``); ``DBGUARD_PROFILES`` names another file. It is written
whole, atomically (0600), under a lock file beside it, so a reader, a crash or a second
writer sees the old file or the new one, and always exactly one active profile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
import portalocker
import tomli_w

from dbguard_plugin import signals
from dbguard_plugin.catalog import TMP_PREFIX, Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import ConfigError, DbGuardError, UnsafePathError, VerificationError
from dbguard_plugin.events import Operation
from dbguard_plugin.files import fsync_dir, open_private, private_dir, replace, write_atomic
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config, resolve
from dbguard_plugin.settings.profiles import (
    Profile,
    ProfileNotFound,
    standard_profiles,
    validate_name,
)
from dbguard_plugin.status import pid_alive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard
    from dbguard_plugin.engines.sqlite.backup import Progress

ENV = "DBGUARD_PROFILES"
BESIDE_CONFIG = "dbguard-profiles.toml"
IN_USER_DIR = "profiles.toml"
FORMAT = 1
_HEADER = "# dbguard environment profiles; change them with 'dbguard profile ...'.\n"
_SIDECARS = ("-wal", "-shm", "-journal")


def profiles_path(config_path: str | Path | None = None) -> Path:
    """Where the profiles file is for the bot config at *config_path* (or for none)."""
    override = os.environ.get(ENV)
    if override:
        return Path(override).expanduser().absolute()
    if config_path is not None:
        return Path(config_path).expanduser().absolute().parent / BESIDE_CONFIG
    return Path(platformdirs.user_config_dir("dbguard", appauthor=False)) / IN_USER_DIR


@dataclass(frozen=True)
class Contents:
    """What the profiles file holds (the standard three when there is no file yet)."""

    active: str | None
    profiles: tuple[Profile, ...]
    exists: bool = True

    def find(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)


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


class ProfileStore:
    """The profiles of one bot config (or of the user), with the same checks as the CLI.

    ::

        store = ProfileStore.locate("user_data/config.json")
        for profile in store.list():
            print(profile.name, profile.kind, profile.name == store.active_name())
        store.create(Profile("paper", kind="testing", db_url="sqlite:////srv/paper.sqlite"))
        store.switch("paper")   # guarded, backs up first; VetoedError with every reason
    """

    def __init__(self, path: Path, config_path: str | Path | None = None) -> None:
        self.path = path
        self.config_path = config_path

    @classmethod
    def locate(cls, config_path: str | Path | None = None) -> ProfileStore:
        return cls(profiles_path(config_path), config_path)

    # -- reading -----------------------------------------------------------------------

    def read(self) -> Contents:
        try:
            fd = open_private(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return Contents(None, tuple(standard_profiles()), exists=False)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{self.path}: not a valid profiles file ({exc}); fix it or "
                              "move it away to start again from the standard profiles") from None
        return self._parse(document)

    def _parse(self, document: dict[str, Any]) -> Contents:
        where = str(self.path)
        unknown = set(document) - {"active", "profiles", "format"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                              "a profiles file holds active, format and [profiles.NAME]")
        tables = document.get("profiles", {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{where}: 'profiles' must be tables [profiles.NAME]")
        profiles = []
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: profiles.{name} must be a table")
            try:
                profiles.append(Profile.from_table(name, table, where))
            except UnsafePathError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        active = document.get("active")
        if active is not None and (not isinstance(active, str)
                                   or active not in {p.name for p in profiles}):
            raise ConfigError(f"{where}: active = {active!r} names no profile in the file; "
                              "set it to one of " + ", ".join(p.name for p in profiles))
        return Contents(active, tuple(profiles))

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def list(self) -> list[Profile]:
        return list(self.read().profiles)

    def active_name(self) -> str | None:
        """The active profile's name; None before the first switch (the bot config's
        own settings apply)."""
        return self.read().active

    def active(self) -> Profile | None:
        contents = self.read()
        return contents.find(contents.active) if contents.active else None

    def get(self, name: str) -> Profile:
        validate_name(name)
        contents = self.read()
        found = contents.find(name)
        if found is None:
            raise ProfileNotFound(
                f"no profile {name!r} in {self.path}; profiles: "
                f"{', '.join(p.name for p in contents.profiles) or 'none'} "
                "('dbguard profile create NAME' adds one)"
            )
        return found

    def config(self, name: str | None = None, db_url: str | None = None) -> Config:
        """dbguard's settings under profile *name* (default: the active one)."""
        return resolve(self.config_path, db_url, name)

    def guard(self, name: str | None = None, db_url: str | None = None) -> Guard:
        """A Guard for profile *name*'s database (default: the active profile's)."""
        from dbguard_plugin.core.guard import Guard

        return Guard(self.config(name, db_url))

    def catalog_of(self, name: str, db_url: str | None = None) -> Catalog:
        """Profile *name*'s backup catalog (*db_url*: the database of a profile that
        names none of its own)."""
        from dbguard_plugin.core.guard import Guard

        profile = self.get(name)
        guard = Guard(self.config(name, None if profile.db_url else db_url))
        guard.close()
        return guard.catalog

    def peek_backup(self, backup_id: str, name: str,
                    db_url: str | None = None) -> tuple[Manifest, str]:
        """Backup *backup_id* of profile *name*'s catalog (its manifest naming the profile
        it was taken in) and that profile's environment."""
        profile = self.get(name)
        manifest = self.catalog_of(name, db_url).get(backup_id)
        return (dataclasses.replace(manifest, profile=manifest.profile or profile.name),
                profile.environment)

    def holder_of(self, backup_id: str, db_url: str | None = None) -> str | None:
        """The profile whose catalog holds *backup_id*, if one does."""
        for profile in self.list():
            try:
                if self.catalog_of(profile.name, db_url).manifest_path(backup_id).exists():
                    return profile.name
            except DbGuardError:
                continue
        return None

    # -- changing ----------------------------------------------------------------------

    def create(self, profile: Profile) -> Profile:
        with self._locked():
            contents = self.read()
            if contents.find(profile.name) is not None:
                raise ConfigError(f"profile {profile.name!r} exists already in {self.path}; "
                                  f"'dbguard profile update {profile.name}' changes it")
            self._write(dataclasses.replace(contents, profiles=(*contents.profiles, profile)))
        return profile

    def update(self, name: str, **changes: Any) -> Profile:
        """Change settings of profile *name*; a value of None unsets it."""
        validate_name(name)
        if "name" in changes:
            raise ConfigError("a profile cannot be renamed; create a new one and delete "
                              "the old one")
        with self._locked():
            contents = self.read()
            old = contents.find(name)
            if old is None:
                self.get(name)  # raises with the list of profiles
                raise AssertionError  # pragma: no cover
            new = old.changed(str(self.path), **changes)
            self._write(dataclasses.replace(contents, profiles=tuple(
                new if p.name == name else p for p in contents.profiles)))
        return new

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
        from dbguard_plugin.core.guard import Guard
        from dbguard_plugin.engines.sqlite.backup import NothingToBackUp
        from dbguard_plugin.operations.restore import bump_generation

        clock = time.monotonic()
        target = self.get(name)
        contents = self.read()
        previous = contents.active
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
            warnings = []
            # Before the first switch there is no previous profile to share a database
            # with: the new profile taking the bot config's database is the usual start.
            if previous is not None and guard.location.identity == new_db.identity:
                warnings.append(
                    f"profiles {previous} and {name} use the same database "
                    f"{new_db.redacted}; give {name} its own with 'dbguard profile update "
                    f"{name} --db-url URL'")
            if new_db.sqlite_path is not None and not new_db.sqlite_path.exists():
                warnings.append(f"{new_db.sqlite_path} does not exist yet; the bot creates "
                                "it when it starts")
            with guard.operation(Operation.PROFILE_SWITCH, force=force, who=who) as verdict:
                warnings += verdict.warnings
                reach("switch:locked")
                try:
                    backup_id = guard.backup("pre-switch", progress=progress).id
                except NothingToBackUp:
                    backup_id = ""
                reach("switch:backed-up")
                with self._locked():
                    now = self.read()
                    if now.active != previous:
                        raise DbGuardError(
                            f"{self.path}: the active profile changed to {now.active} while "
                            "this switch ran; nothing was switched, try again")
                    if now.find(target.name) is None:
                        raise ProfileNotFound(f"profile {name} was deleted while this "
                                              "switch ran; nothing was switched")
                    self._write(dataclasses.replace(now, active=name))
                reach("switch:written")
                # A bot on the previous database notices on its next tick and refreshes.
                bump_generation(guard, "profile_switch")
                guard.pm.hook.dbguard_refresh(guard=guard, operation=Operation.PROFILE_SWITCH)
                signals.notify(signals.profile_switched, guard, previous=previous,
                               profile=name, backup_id=backup_id, database=new_db.redacted)
                reach("switch:done")
            return SwitchOutcome(previous, name, backup_id, new_db.redacted,
                                 guard.location.redacted, True, tuple(warnings),
                                 round(time.monotonic() - clock, 3))
        finally:
            if own:
                guard.close()

    # -- the file ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, timeout: float = 30.0) -> Iterator[None]:
        """One writer of the profiles file at a time (read, change, write)."""
        directory = self.path.parent
        if not directory.exists():
            private_dir(directory)
        fh = os.fdopen(open_private(directory / f".{self.path.name}.lock"), "r+b")
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE
                                     | portalocker.LockFlags.NON_BLOCKING)
                    break
                except portalocker.LockException:
                    if time.monotonic() >= deadline:
                        raise DbGuardError(f"{self.path}: another dbguard process has been "
                                           f"changing the profiles for {timeout:.0f} s; try "
                                           "again when it finishes") from None
                    time.sleep(0.02)
            yield
        finally:
            fh.close()

    def _write(self, contents: Contents) -> None:
        """Replace the file with *contents*; call with the lock held."""
        document: dict[str, Any] = {"format": FORMAT}
        if contents.active is not None:
            document["active"] = contents.active
        document["profiles"] = {p.name: p.to_table() for p in contents.profiles}
        self._remove_stale_temporaries()
        write_atomic(self.path, (_HEADER + tomli_w.dumps(document)).encode(), fsync=True)

    def _remove_stale_temporaries(self) -> None:
        """What a writer killed between its write and its rename left behind."""
        pattern = re.compile(rf"^\.tmp-{re.escape(self.path.name)}\.(\d+)(?:-\d+)?$")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.path.parent):
                match = pattern.match(entry.name)
                if match and not pid_alive(int(match.group(1))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

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
        from dbguard_plugin.core.guard import Guard

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


def _same_directory(one: str | None, other: str | None) -> bool:
    """Whether two configured directories are one, through any symlink or spelling."""
    if one is None or other is None:
        return one == other
    return os.path.realpath(os.path.expanduser(one)) == \
        os.path.realpath(os.path.expanduser(other))


def fetch_backup(store: ProfileStore, guard: Guard, backup_id: str, from_profile: str,
                 db_url: str | None = None) -> tuple[Manifest, str]:
    """Bring backup *backup_id* from profile *from_profile*'s catalog into *guard*'s,
    verified and under the same id, so the restore (and its crash recovery) finds it
    there. The copy's manifest keeps the profile it was taken in. Returns the manifest
    and the source profile's environment."""
    manifest, environment = store.peek_backup(backup_id, from_profile, db_url)
    copy_backup(store.catalog_of(from_profile, db_url), guard.catalog, manifest)
    return manifest, environment


def copy_backup(source: Catalog, target: Catalog, manifest: Manifest) -> Manifest:
    """Copy a backup between catalogs: checked, fsynced, renamed, its manifest last."""
    from dbguard_plugin.engines.sqlite.backup import file_digest
    from dbguard_plugin.engines.sqlite.verify import verify_backup

    if os.path.realpath(source.directory) == os.path.realpath(target.directory):
        return manifest
    result = verify_backup(source, manifest, "quick_check")
    if not result.ok:
        raise VerificationError(f"backup {manifest.id} failed verification; nothing was "
                                "copied: " + "; ".join(result.problems))
    with target.locked():
        existing = target.manifest_path(manifest.id)
        if existing.exists():
            if Manifest.read(existing).sha256 == manifest.sha256:
                return manifest
            raise DbGuardError(f"{target.directory} already holds a different backup "
                               f"{manifest.id}; nothing was copied")
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
