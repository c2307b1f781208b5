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
