"""The profiles file: where it is, what it holds, and reading and writing it safely.

The file is TOML: ``active = "NAME"`` and one ``[profiles.NAME]`` table per profile. It
lives beside the bot config (``dbguard-profiles.toml`` in the directory of
``--config``) when there is one, else in the user's config directory (the platform's
convention, ``profiles.toml``); ``DBGUARD_PROFILES`` names another file. It is written
whole, atomically (0600), under a lock file beside it, so a reader, a crash or a second
writer sees the old file or the new one, and always exactly one active profile.

The guarded operations on profiles (switch, delete with data) are
:class:`dbguard_plugin.operations.profile_store.ProfileStore`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from dbguard_plugin import locks
from dbguard_plugin.errors import ConfigError, UnsafePathError, shown
from dbguard_plugin.files import NotAFile, private_dir, read_small, write_atomic
from dbguard_plugin.settings import toml
from dbguard_plugin.settings.profiles import (
    Profile,
    ProfileNotFound,
    standard_profiles,
    validate_name,
)
from dbguard_plugin.status import pid_alive

ENV = "DBGUARD_PROFILES"
BESIDE_CONFIG = "dbguard-profiles.toml"
IN_USER_DIR = "profiles.toml"
FORMAT = 1
_Self = TypeVar("_Self", bound="ProfileFile")
_HEADER = "# dbguard environment profiles; change them with 'dbguard profile ...'.\n"


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


def _check_format(where: str, version: Any) -> None:
    """A file another dbguard wrote in a newer format is refused, not read in part and
    then written back in the old one."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"{where}: format = {shown(version)} is invalid: expected {FORMAT}")
    if version > FORMAT:
        raise ConfigError(f"{where}: format {version} is newer than this dbguard reads "
                          f"({FORMAT}); upgrade dbguard-plugin, or move the file away to "
                          "start again from the standard profiles")


class ProfileFile:
    """The profiles file of one bot config (or of the user): read, checked and changed
    with the same rules as the CLI, one writer at a time."""

    def __init__(self, path: Path, config_path: str | Path | None = None) -> None:
        self.path = path
        self.config_path = config_path

    @classmethod
    def locate(cls: type[_Self], config_path: str | Path | None = None) -> _Self:
        return cls(profiles_path(config_path), config_path)

    # -- reading -----------------------------------------------------------------------

    def read(self) -> Contents:
        try:
            raw = read_small(self.path, follow=False)
        except FileNotFoundError:
            return Contents(None, tuple(standard_profiles()), exists=False)
        except IsADirectoryError:
            raise ConfigError(f"{self.path}: is a directory, not a profiles file; name a "
                              f"file ({ENV}) or move the directory away") from None
        except NotAFile as exc:
            raise ConfigError(f"{exc}, not a profiles file; name a regular file ({ENV}) "
                              "or move it away to start again from the standard profiles"
                              ) from None
        try:
            document = toml.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, toml.TomlError) as exc:
            raise ConfigError(f"{self.path}: not a valid profiles file ({exc}); fix it or "
                              "move it away to start again from the standard profiles") from None
        return self._parse(document)

    def _parse(self, document: dict[str, Any]) -> Contents:
        where = str(self.path)
        unknown = set(document) - {"active", "profiles", "format"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                              "a profiles file holds active, format and [profiles.NAME]")
        _check_format(where, document.get("format", FORMAT))
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
            names = ", ".join(p.name for p in profiles)
            raise ConfigError(f"{where}: active = {shown(active)} names no profile in the "
                              "file; " + (f"set it to one of {names}" if names
                                          else "remove that line"))
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

    # -- the file ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, timeout: float = 30.0) -> Iterator[None]:
        """One writer of the profiles file at a time (read, change, write)."""
        directory = self.path.parent
        if not directory.exists():
            private_dir(directory)
        with locks.exclusive(directory / f".{self.path.name}.lock", timeout,
                             f"{self.path}: another dbguard process has been changing the "
                             f"profiles for {timeout:.0f} s; try again when it finishes"):
            yield

    def _write(self, contents: Contents) -> None:
        """Replace the file with *contents*; call with the lock held."""
        document: dict[str, Any] = {"format": FORMAT}
        if contents.active is not None:
            document["active"] = contents.active
        document["profiles"] = {p.name: p.to_table() for p in contents.profiles}
        self._remove_stale_temporaries()
        write_atomic(self.path, (_HEADER + toml.dumps(document)).encode(), fsync=True)

    def _remove_stale_temporaries(self) -> None:
        """What a writer killed between its write and its rename left behind."""
        pattern = re.compile(rf"^\.tmp-{re.escape(self.path.name)}\.(\d+)(?:-\d+)?$")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.path.parent):
                match = pattern.match(entry.name)
                if match and not pid_alive(int(match.group(1))):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
