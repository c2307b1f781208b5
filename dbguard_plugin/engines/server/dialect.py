"""What every server dialect provides to the backup, restore and lease code."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.backup import Progress
from dbguard_plugin.engines.server.params import ServerParams
from dbguard_plugin.engines.server.tools import Digests
from dbguard_plugin.errors import DbGuardError

#: dbguard's commit markers of restores (see :mod:`dbguard_plugin.operations.server_restore`);
#: like the holders table, never dumped, counted or fingerprinted.
RESTORES_TABLE = "dbguard_restores"


class OutcomeUnknown(DbGuardError):
    """A replacement was started and this process cannot tell whether it committed;
    the operation journal stays, and recovery decides by the commit marker."""


@dataclass(frozen=True)
class DumpResult:
    digests: Digests
    compression: str
    tables: dict[str, int]
    schema_fingerprint: str
    server_version: str
    check: str


@dataclass(frozen=True)
class LiveFacts:
    tables: dict[str, int]
    schema_fingerprint: str


class LentLease(Protocol):
    """What a restore needs of the lease it runs under (a ServerLease)."""

    def pinned(self) -> AbstractContextManager[Any]:
        """The lease's own connection: statements on it live and die with the lease."""

    def lend(self) -> Callable[[float], bool]:
        """Hand the exclusive lock to a queued restore transaction; ``take_back``."""


class Dialect(Protocol):
    params: ServerParams
    #: the catalog file suffix before any compression suffix, e.g. ``.pgdump``
    suffix: str

    def connect(self) -> Any: ...

    def dump(self, fd: int, compression: str, progress: Progress | None,
             started: Callable[[int], None] | None, *, plain: bool = False) -> DumpResult:
        """Dump the database into *fd*, stream-compressed by *compression* where the
        tool does not compress itself. *plain*: no compression at all, the tool's own
        included (a dump for the repository, which compresses each chunk itself)."""

    def check_new(self, path: Path, manifest: Manifest) -> list[str]: ...

    def verify_archive(self, path: Path, manifest: Manifest) -> list[str]: ...

    def restore_archive(self, path: Path, manifest: Manifest, lock_timeout: float,
                        lease: LentLease, marker: str) -> None:
        """Replace the live tables atomically, with *marker* committed in the same step.

        Returns when the replacement committed; raises OutcomeUnknown when that cannot be
        told, and any other error when it certainly did not commit.
        """

    def committed(self, marker: str) -> bool | None:
        """Whether the replacement tagged *marker* committed; None while it may still."""

    def forget(self, marker: str) -> None:
        """Drop the marker once the journal no longer names it."""

    def live_facts(self) -> LiveFacts: ...

    def cleanup(self) -> None: ...


def fingerprint(rows: Iterable[tuple[Any, ...]]) -> str:
    """A stable hash of the tables' columns (name, position, type, nullability)."""
    text = "\n".join(sorted("|".join("" if v is None else str(v) for v in row) for row in rows))
    return hashlib.sha256(text.encode()).hexdigest()


def compare(manifest: Manifest, facts: LiveFacts, where: str) -> list[str]:
    """What differs between a backup's manifest and a database's facts."""
    problems = []
    if manifest.schema_fingerprint and facts.schema_fingerprint != manifest.schema_fingerprint:
        problems.append(f"{where}: schema differs from backup {manifest.id}")
    if facts.tables != manifest.tables:
        changed = sorted(
            name for name in set(facts.tables) | set(manifest.tables)
            if facts.tables.get(name) != manifest.tables.get(name)
        )
        shown = ", ".join(f"{n} {facts.tables.get(n)} != {manifest.tables.get(n)}"
                          for n in changed[:5])
        problems.append(f"{where}: row counts differ from backup {manifest.id} ({shown})")
    return problems
