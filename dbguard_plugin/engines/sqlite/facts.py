"""What dbguard reads from a SQLite file: header facts, schema fingerprint, row counts."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class SqliteFacts:
    page_size: int
    page_count: int
    journal_mode: str
    user_version: int
    schema_fingerprint: str
    tables: dict[str, int]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_fingerprint(conn: sqlite3.Connection) -> str:
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
    ).fetchall()
    text = "\n".join(sorted("|".join(str(col) for col in row) for row in rows))
    return hashlib.sha256(text.encode()).hexdigest()


def table_names(conn: sqlite3.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        name: int(conn.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0])
        for name in table_names(conn)
    }


def read_facts(conn: sqlite3.Connection, journal_mode: str | None = None) -> SqliteFacts:
    """Facts of the database *conn* has open (inside the caller's read transaction)."""
    mode = journal_mode or str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    return SqliteFacts(
        page_size=int(conn.execute("PRAGMA page_size").fetchone()[0]),
        page_count=int(conn.execute("PRAGMA page_count").fetchone()[0]),
        journal_mode=mode,
        user_version=int(conn.execute("PRAGMA user_version").fetchone()[0]),
        schema_fingerprint=schema_fingerprint(conn),
        tables=row_counts(conn),
    )


def check(conn: sqlite3.Connection, level: str = "quick_check") -> list[str]:
    """Run quick_check or integrity_check; return the problems (empty when ok)."""
    if level not in ("quick_check", "integrity_check"):
        raise ValueError(f"unknown check level {level!r}")
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA {level}")]
    return [] if rows == ["ok"] else rows


def content_digest(conn: sqlite3.Connection) -> str:
    """sha256 of what the database holds, not of how its pages lie.

    The schema (``sqlite_master`` without root pages), ``user_version``,
    ``application_id`` and every table's rows. Rows are combined as a sum of their
    hashes, a canonical order that needs no sort and no memory, and that ignores the
    implicit rowids VACUUM may renumber: VACUUM, a page size, the journal mode or the
    backup API never change the digest; one row, one column or one index does.
    ``sqlite_sequence`` (AUTOINCREMENT's counters) is; ``sqlite_stat*`` (ANALYZE's
    statistics) is not. Call it inside one read transaction.
    """
    digest = hashlib.sha256()
    for pragma in ("user_version", "application_id"):
        digest.update(f"{pragma}={conn.execute(f'PRAGMA {pragma}').fetchone()[0]}\n".encode())
    schema = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master "
        "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_stat%'"
    ).fetchall()
    for entry in sorted(repr(row) for row in schema):
        digest.update(entry.encode() + b"\n")
    tables = sorted(
        str(name) for _type, name, _tbl, sql in schema
        if _type == "table" and not str(sql).upper().startswith("CREATE VIRTUAL")
    )
    for table in tables:
        digest.update(f"table {table}: {_rows_digest(conn, table)}\n".encode())
    return digest.hexdigest()


def _rows_digest(conn: sqlite3.Connection, table: str) -> str:
    """Row count and the sum (mod 2**256) of each row's sha256: the same for the same
    rows in any order. A virtual table's rows live in its shadow tables."""
    total, count = 0, 0
    prefix = table.encode() + b"\x00"
    for row in conn.execute(f"SELECT * FROM {quote(table)}"):
        total += int.from_bytes(hashlib.sha256(prefix + repr(row).encode()).digest(), "big")
        count += 1
    return f"{count} {total % (1 << 256):064x}"
