"""Verifying a stored SQLite backup in one read: its sha256, then SQLite's own check.

The stored file is hashed as it is decompressed (engines/sqlite/stored.py), and the
checks run on that decompressed copy: a verification reads the stored file once, and a
restore writes exactly the bytes it verified. Every message names the stored file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.codecs import file_digest
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.reassemble import room_for_copy
from dbguard_plugin.engines.sqlite.backup import sqlite_uri
from dbguard_plugin.engines.sqlite.facts import check, schema_fingerprint
from dbguard_plugin.engines.sqlite.stored import (
    SQLITE_MAGIC,
    ReadCopy,
    read_into,
    read_repository,
    scratch,
)
from dbguard_plugin.engines.verify import VerifyResult, digest_problems, located
from dbguard_plugin.errors import UnsafePathError


@contextlib.contextmanager
def checked_copy(
    catalog: Catalog, manifest: Manifest, level: str = "integrity_check"
) -> Iterator[tuple[VerifyResult, Path | None]]:
    """The SQLite backup *manifest* verified in one read of its stored file, and its
    plain content while the block runs: the bytes that were checked (a private scratch
    copy of a compressed backup, the stored file otherwise); None when there is none."""
    if manifest.storage == "repository":
        with _reassembled(catalog, manifest, level) as checked:
            yield checked
        return
    where = located(catalog, manifest)
    if not where.ok:
        yield where, None
        return
    path = Path(where.path)
    with contextlib.ExitStack() as stack:
        try:
            with room_for_copy(catalog, manifest):
                plain = stack.enter_context(scratch(path, manifest.compression,
                                                    catalog.directory))
        except (UnsafePathError, OSError) as exc:  # a symlink, or another fault, for the copy
            problems = digest_problems(manifest, path, *file_digest(path))
            yield VerifyResult(manifest, where.path, problems or (f"{path}: {exc}",)), None
            return
        with room_for_copy(catalog, manifest):
            result = verify_read(manifest, path, plain, level)
        yield result, plain


@contextlib.contextmanager
def _reassembled(catalog: Catalog, manifest: Manifest,
                 level: str) -> Iterator[tuple[VerifyResult, Path | None]]:
    """A repository backup: its chunks rehashed as they are reassembled into a scratch
    copy (a bad one is the copy's failure), then the same checks as a data file's."""
    where = catalog.location_of(manifest) / manifest.id
    with contextlib.ExitStack() as stack:
        try:
            with room_for_copy(catalog, manifest):
                plain = stack.enter_context(scratch(where, "repository", catalog.directory))
                copy = read_repository(catalog, manifest, plain)
        except (UnsafePathError, OSError) as exc:  # a symlink, or another fault, for the copy
            yield VerifyResult(manifest, str(where), (f"{where}: {exc}",)), None
            return
        yield VerifyResult(manifest, str(where),
                           content_problems(manifest, where, copy, level)), plain


def verify_read(manifest: Manifest, path: Path, plain: Path, level: str) -> VerifyResult:
    """Read the stored file *path* into *plain* (see :func:`checked_copy`), then the
    checks: its size and sha256, and when they match, :func:`content_problems`."""
    copy = read_into(path, manifest.compression, plain)
    problems = digest_problems(manifest, path, copy.size, copy.sha256)
    return VerifyResult(manifest, str(path),
                        problems or content_problems(manifest, path, copy, level))


def content_problems(
    manifest: Manifest, path: Path, copy: ReadCopy, level: str = "integrity_check"
) -> tuple[str, ...]:
    """What *level* (and the manifest's raw sha256 and schema) finds wrong with the SQLite
    backup stored at *path*, read as *copy*; never raises for a bad file."""
    if copy.failure is not None:
        return (f"{path}: {copy.failure}",)
    problems: list[str] = []
    if manifest.compression != "none" and manifest.storage == "file" and (
            copy.raw_sha256 != manifest.raw_sha256):
        problems.append(f"{path}: decompressed content does not match the manifest")
    if copy.head != SQLITE_MAGIC:
        return (f"{path}: not a SQLite database",)
    try:
        conn = sqlite3.connect(sqlite_uri(copy.plain, "ro"), uri=True)
        try:
            problems += [f"{path}: {level}: {p}" for p in check(conn, level)[:10]]
            if manifest.schema_fingerprint and (
                schema_fingerprint(conn) != manifest.schema_fingerprint
            ):
                problems.append(f"{path}: schema differs from the manifest's fingerprint")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        problems.append(f"{path}: SQLite cannot read it: {exc}")
    except Exception as exc:  # e.g. an unknown level: a problem, reported like the others
        problems.append(f"{path}: {exc}")
    return tuple(problems)
