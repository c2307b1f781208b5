"""The backup catalog: one directory (0700) of backups, each with its manifest.

A backup exists once its manifest does. The data file is renamed into place first and
the manifest after it, both fsynced, so a crash at any instant leaves either a complete
backup or leftovers that :meth:`Catalog.cleanup` removes: ``.tmp-*`` files and data
files without a manifest. Every change happens under the catalog's own lock file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dbguard_plugin import locks
from dbguard_plugin.catalog.codecs import SUFFIXES
from dbguard_plugin.catalog.manifest import ID_PATTERN, Manifest
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.errors import ConfigError, DbGuardError, UnsafePathError, VerificationError
from dbguard_plugin.files import (
    fsync_dir,
    private_dir,
    read_small,
    replace,
    write_atomic,
    write_json_atomic,
)
from dbguard_plugin.location import DatabaseLocation, identity_of
from dbguard_plugin.status import HOSTNAME, pid_alive

log = logging.getLogger(__name__)

#: What a backup id may look like when a user types one: no separators, no dot-dot
#: (a manifest's id is held to the same rule when it is read).
_ID = ID_PATTERN
TMP_PREFIX = ".tmp-"
_LOCK_NAME = ".catalog.lock"
MARKER = ".dbguard-catalog.json"
#: The deduplicated repository's directory inside a catalog. Kept here rather than in
#: catalog.repository so that reading the catalog (status, check) never imports it.
REPOSITORY_DIR = "repository"
#: The data file's base suffix by backend (anything else is a SQLite backup)
_BASE = {"postgresql": ".pgdump", "mariadb": ".sql"}
#: The names dbguard gives backup data files: <id>.sqlite[.gz|.zst], and for server
#: databases <id>.pgdump (PostgreSQL) or <id>.sql[.gz|.zst] (MariaDB/MySQL)
_DATA = re.compile(
    r"^(\d{8}T\d{9}Z-[a-z-]+(?:-\d+)?)\.(?:sqlite|sql|pgdump)(?:"
    + "|".join(re.escape(s) for s in SUFFIXES.values() if s) + ")?$")
#: Scratch copies a verify or restore is reading: .tmp-read-<pid>-...
_READER = re.compile(r"^\.tmp-read-(\d+)-")
#: Pins of running operations: .pin-<pid>-<token>.json (see Catalog.pinning)
_PIN = re.compile(r"^\.pin-(\d+)-[0-9a-f]+\.json$")


#: The catalog's directory inside the dbguard directory when ``backup_dir`` is not set;
#: each other profile of the same database keeps its own beside it, ``backups-NAME``.
DEFAULT_DIR = "backups"


def default_directory(state_dir: Path) -> Path:
    """Where a database's backups live unless ``backup_dir`` says otherwise."""
    return state_dir / DEFAULT_DIR


class BackupNotFound(DbGuardError):
    """No backup with that id in the catalog."""


@dataclasses.dataclass(frozen=True)
class Damaged:
    """A manifest file in the catalog that fails its checks: shown, never used. Its data
    file stays (cleanup keeps a data file whose manifest file exists)."""

    file: str  # the manifest's file name in the catalog
    path: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "path": self.path, "why": self.why}

    def line(self) -> str:
        return f"DAMAGED {self.file}: {self.why}"


def validate_id(backup_id: str) -> str:
    """Refuse ids that could name a file outside the catalog."""
    if not isinstance(backup_id, str) or not _ID.match(backup_id) or ".." in backup_id:
        shown = repr(backup_id)[:80]
        raise UnsafePathError(
            f"{shown} is not a backup id: ids are letters, digits, '.', '_' and '-' "
            "(as listed by 'dbguard backups'), never a path"
        )
    return backup_id


def data_file(backup_id: str, backend: str, compression: str) -> str:
    """The name of a backup's data file: its id, the backend's suffix, the compression's."""
    suffix = SUFFIXES.get(compression, "?")
    return f"{backup_id}{_BASE.get(backend, '.sqlite')}{suffix}"


def expected_file(manifest: Manifest) -> str:
    """The only data file name a manifest may name: its id plus the compression's suffix
    (none for a backup in the repository: its chunks are its data)."""
    if manifest.storage == "repository":
        return ""
    return data_file(manifest.id, manifest.backend, manifest.compression)


class Catalog:
    """The backups of one database.

    A marker file names that database, so two databases never share (and prune) one
    catalog, and a catalog is never the database's own directory.
    """

    #: The pins of the operation running in this process (see pinning()), or None.
    active_pins: Pins | None = None

    def __init__(self, directory: Path, database: DatabaseLocation | None = None) -> None:
        self.directory = directory
        self.database = database
        self._prepared = False

    @property
    def identity(self) -> str | None:
        return None if self.database is None else self.database.identity

    def prepare(self) -> None:
        if self._prepared:
            return
        database = self.database
        if database is not None and database.sqlite_path is not None and (
            os.path.realpath(database.sqlite_path.parent) == os.path.realpath(self.directory)
        ):
            raise ConfigError(
                f"backup_dir {self.directory} is the directory of the database itself; "
                "give backups a directory of their own (the default is <database>.dbguard/"
                "backups)"
            )
        private_dir(self.directory)
        marker = self.directory / MARKER
        if self.identity is not None:
            try:
                owner = json.loads(read_small(marker)).get("database")
            except FileNotFoundError:
                write_json_atomic(marker, {"database": self.identity})
                owner = self.identity
            except (OSError, ValueError, AttributeError):
                owner = None
            if not isinstance(owner, str) or identity_of(owner) != self.identity:
                raise ConfigError(
                    f"{self.directory} holds the backups of {owner or 'another database'}, "
                    f"not of {self.identity}: give each database its own backup_dir"
                )
        self._prepared = True

    def _marker(self) -> dict[str, Any]:
        """The marker's content; {} when it is missing or unreadable."""
        try:
            owner = json.loads(read_small(self.directory / MARKER))
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def adopt(self, identity: str) -> None:
        """Record that this catalog now belongs to *identity* (the database moved); the
        identities it had before stay listed, so its older backups still count as this
        database's (see :meth:`former_identities`)."""
        identity = identity_of(identity)
        marker = self._marker()
        former = self.former_identities(marker)
        if isinstance(marker.get("database"), str):
            former.append(marker["database"])
        former = [f for f in dict.fromkeys(former) if f != identity]
        write_json_atomic(self.directory / MARKER, {"database": identity, "formerly": former})

    def former_identities(self, marker: dict[str, Any] | None = None) -> list[str]:
        """The databases this catalog belonged to before moves, oldest first."""
        former = (self._marker() if marker is None else marker).get("formerly", [])
        return [f for f in former if isinstance(f, str)] if isinstance(former, list) else []

    def belongs_here(self, source: str) -> bool:
        """True when a backup whose manifest names *source* (a redacted URL) was taken of
        this catalog's database, now or before a move; unknown sources count as here."""
        if not source or self.identity is None:
            return True
        return identity_of(source) in (self.identity, *map(identity_of,
                                                             self.former_identities()))

    @contextlib.contextmanager
    def locked(self, timeout: float = 60.0) -> Iterator[None]:
        """Hold the catalog lock: one writer (backup, prune, cleanup) at a time."""
        self.prepare()
        with locks.exclusive(self.directory / _LOCK_NAME, timeout,
                             f"{self.directory}: another dbguard process has held the catalog "
                             f"for {timeout:.0f} s; try again when it finishes"):
            yield

    # -- pins -----------------------------------------------------------------------

    @contextlib.contextmanager
    def pinning(self, operation: str) -> Iterator[Pins]:
        """Pins for one operation, released on exit: every id this catalog allocates
        meanwhile (the operation's safety backup) is pinned before its file exists, and
        :meth:`pin` pins backups already there. Prune never deletes a pinned backup."""
        pins = Pins(self, operation)
        outer, self.active_pins = self.active_pins, pins
        try:
            yield pins
        finally:
            self.active_pins = outer
            pins.release()

    def pin(self, backup_id: str) -> Manifest:
        """Pin backup *backup_id* for the operation inside :meth:`pinning`; raises
        BackupNotFound when it is already gone."""
        with self.locked():
            manifest = self.get(backup_id)
            if self.active_pins is not None:
                self.active_pins.add_locked(backup_id)
        return manifest

    def pinned_ids(self, sweep: bool = False) -> set[str]:
        """The ids running operations' pins hold. A pin of a dead process on this host
        holds nothing; with *sweep* (call with the catalog lock held) its file goes."""
        held: set[str] = set()
        try:
            names = [n for n in os.listdir(self.directory) if _PIN.match(n)]
        except FileNotFoundError:
            return held
        for name in names:
            try:
                data = json.loads(read_small(self.directory / name))
                pid, host, ids = int(data["pid"]), str(data["host"]), list(data["ids"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile; pins are written whole (by rename)
            if host == HOSTNAME and not pid_alive(pid):
                if sweep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / name)
                continue
            held.update(str(i) for i in ids)
        return held

    # -- names ----------------------------------------------------------------------

    def new_id(self, reason: str, now: float) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
        base = f"{stamp}-{reason}"
        candidate, n = base, 1
        while (self.directory / f"{candidate}.json").exists() or any(
            self.directory.glob(f"{candidate}.*")
        ):
            n += 1
            candidate = f"{base}-{n}"
        if self.active_pins is not None:
            # under the catalog lock, before the data file exists: no prune can see the
            # new backup without its pin (see pinning())
            self.active_pins.add_locked(candidate)
        return candidate

    def manifest_path(self, backup_id: str) -> Path:
        return self._inside(f"{validate_id(backup_id)}.json")

    def data_path(self, manifest: Manifest) -> Path:
        validate_id(manifest.file)
        return self._inside(manifest.file)

    def location_of(self, manifest: Manifest) -> Path:
        """Where backup *manifest*'s data is: its file, or the repository its chunks
        are in (for messages and listings; reading goes through the engine)."""
        if manifest.storage == "repository":
            return self.directory / REPOSITORY_DIR
        return self.data_path(manifest)

    def _inside(self, name: str) -> Path:
        path = self.directory / name
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(path).st_mode):
                raise UnsafePathError(f"{path} is a symlink; dbguard does not follow links "
                                      "out of its catalog")
        return path

    # -- reading ----------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every backup with a sound manifest, oldest first; a damaged one is left out
        (with a warning in the log) and listed by :meth:`damaged`."""
        found, damaged = self._scan()
        for bad in damaged:
            log.warning("dbguard: skipping %s: %s", bad.file, bad.why)
        return found

    def damaged(self) -> list[Damaged]:
        """The manifests that cannot be trusted, by file name, each with why. They are
        never used (listed, restored, pruned, counted as verified): an operator decides."""
        return self._scan()[1]

    def scan(self) -> tuple[list[Manifest], list[Damaged]]:
        """The sound manifests (oldest first) and the damaged ones, in one listing."""
        return self._scan()

    def _scan(self) -> tuple[list[Manifest], list[Damaged]]:
        found: list[Manifest] = []
        damaged: list[Damaged] = []
        try:
            names = sorted(os.listdir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return found, damaged
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                found.append(self._read(name))
            except (VerificationError, UnsafePathError) as exc:
                why = str(exc).removeprefix(f"{self.directory / name}: ")
                damaged.append(Damaged(name, str(self.directory / name), why))
        found.sort(key=lambda m: (m.created_ts, m.id))
        return found, damaged

    def _read(self, name: str) -> Manifest:
        """The manifest in file *name*, checked against the name it is stored under."""
        path = self._inside(name)
        manifest = Manifest.read(path)
        if manifest.id + ".json" != name:
            raise VerificationError(f"{path}: manifest names backup {manifest.id!r}")
        if manifest.file != expected_file(manifest):
            # the bad name itself is not echoed: it may be a path outside the catalog
            raise VerificationError(f"{path}: manifest names a data file that is not "
                                    f"{expected_file(manifest)!r}: it was edited")
        return manifest

    def get(self, backup_id: str) -> Manifest:
        """Backup *backup_id*; BackupNotFound without a manifest, VerificationError (exit
        4, naming the file and why) when its manifest is damaged."""
        path = self.manifest_path(backup_id)
        if not path.exists():
            raise BackupNotFound(
                f"no backup {backup_id!r} in {self.directory}; 'dbguard backups' lists them"
            )
        manifest = Manifest.read(path)
        if manifest.id != backup_id:
            raise VerificationError(f"{path}: manifest names backup {manifest.id!r}")
        if manifest.file != expected_file(manifest):
            raise VerificationError(f"{path}: manifest names data file {manifest.file!r}, "
                                    f"not {expected_file(manifest)!r}: it was edited")
        return manifest

    def newest_verified(self) -> Manifest | None:
        verified = [m for m in self.manifests() if m.verified]
        return verified[-1] if verified else None

    # -- changing ---------------------------------------------------------------------

    def delete(self, manifest: Manifest) -> None:
        """Remove a backup: the manifest first, so it leaves the catalog at once."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.manifest_path(manifest.id))
        fsync_dir(self.directory)
        reach("prune:manifest-deleted")
        if manifest.storage == "repository":
            return  # its chunks go when no manifest references them (Repository.collect)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.data_path(manifest))

    def place(self, tmp: Path, name: str) -> None:
        """Move a finished data file from its ``.tmp-`` name to *name*, durably."""
        replace(tmp, self.directory / name)
        fsync_dir(self.directory)

    def write_manifest(self, manifest: Manifest) -> None:
        """Write *manifest*, fsynced: the backup is in the catalog from now on."""
        write_atomic(self.manifest_path(manifest.id), manifest.to_json(), fsync=True)

    def record_verification(self, manifest: Manifest, ok: bool) -> Manifest:
        """Mark a backup verified or not after ``verify``: a bad one no longer counts as
        the newest verified backup, for retention, for resuming trading or for restore."""
        if manifest.verified == ok:
            return manifest
        updated = dataclasses.replace(manifest, verified=ok)
        with self.locked():
            path = self.manifest_path(manifest.id)
            if path.exists():
                write_atomic(path, updated.to_json(), fsync=True)
        return updated

    def _superseded(self, backup_id: str) -> bool:
        """True when data file of *backup_id* belongs to no backup: no manifest, or one
        whose backup is in the repository (a conversion killed before the delete)."""
        path = self.directory / f"{backup_id}.json"
        if not path.exists():
            return True
        try:
            return Manifest.read(path).storage == "repository"
        except VerificationError:
            return False

    def has_leftovers(self) -> bool:
        """Cheap look for what cleanup() would remove (no lock, no manifest parsing)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return False
        return any(
            (n.startswith(TMP_PREFIX)
             and ((r := _READER.match(n)) is None or not pid_alive(int(r.group(1)))))
            or ((m := _DATA.match(n)) is not None and f"{m.group(1)}.json" not in names)
            for n in names
        )

    def cleanup(self) -> list[str]:
        """Remove what interrupted backups left. Call with the catalog lock held."""
        removed: list[str] = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return removed
        for name in names:
            if name.startswith(TMP_PREFIX):
                reader = _READER.match(name)
                orphan = reader is None or not pid_alive(int(reader.group(1)))
            else:
                data = _DATA.match(name)
                # Only files dbguard names itself, and only without a manifest file (or
                # with one that says the backup is in the repository now): a damaged
                # manifest keeps its data for an operator to look at.
                orphan = data is not None and self._superseded(data.group(1))
            if orphan:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)
                removed.append(name)
        if removed:
            fsync_dir(self.directory)
            log.info("dbguard: removed leftovers of interrupted backups: %s", ", ".join(removed))
        return removed


class Pins:
    """The backups one operation of this process needs: ``.pin-<pid>-<token>.json`` in
    the catalog, which prune reads under the catalog lock. Named by pid, so that a pin
    whose process died (SIGKILL) is recognised and holds nothing: from then on the
    operation's journal, if it got that far, pins what recovery needs."""

    def __init__(self, catalog: Catalog, operation: str) -> None:
        self.catalog = catalog
        self.operation = operation
        self.ids: list[str] = []
        self.path = catalog.directory / f".pin-{os.getpid()}-{secrets.token_hex(6)}.json"

    def add_locked(self, backup_id: str) -> None:
        """Pin *backup_id*; call with the catalog lock held."""
        if backup_id in self.ids:
            return
        self.ids.append(backup_id)
        # no fsync: after a power cut no process is alive, and no pin is needed
        write_json_atomic(self.path, {"pid": os.getpid(), "host": HOSTNAME,
                                      "operation": self.operation, "ids": self.ids,
                                      "since": time.time()})

    def release(self) -> None:
        if self.ids:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
