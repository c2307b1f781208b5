"""Checking a stored SQLite backup whose sha256 matched: SQLite's own check of its content."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.codecs import file_digest
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.sqlite.backup import SQLITE_MAGIC, opened_copy, sqlite_uri
from dbguard_plugin.engines.sqlite.facts import check, schema_fingerprint


def content_problems(
    catalog: Catalog, manifest: Manifest, path: Path, level: str = "integrity_check"
) -> tuple[str, ...]:
    """What *level* (and the manifest's raw sha256 and schema) finds wrong with the SQLite
    backup at *path*; never raises for a bad file."""
    problems: list[str] = []
    try:
        with opened_copy(path, manifest.compression, catalog.directory) as plain:
            if manifest.compression != "none":
                _, raw_sha = file_digest(plain)
                if raw_sha != manifest.raw_sha256:
                    problems.append(f"{path}: decompressed content does not match the manifest")
            with open(plain, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    return (f"{path}: not a SQLite database",)
            conn = sqlite3.connect(sqlite_uri(plain, "ro"), uri=True)
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
    except Exception as exc:  # a damaged archive can raise anything from the decompressor
        problems.append(f"{path}: {exc}")
    return tuple(problems)
