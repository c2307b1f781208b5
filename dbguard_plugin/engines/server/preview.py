"""What restoring a server backup would change: rows per table, read-only.

The SQLite preview opens the backup as a database to find the open orders and trades it
lacks; a server archive cannot be queried in place, so this preview compares the live
row counts with the manifest's. The backup is verified first, by the caller
(:func:`dbguard_plugin.engines.server_preview`).
"""

from __future__ import annotations

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.preview import Preview, TableChange
from dbguard_plugin.engines.server.dialects import dialect_for
from dbguard_plugin.location import DatabaseLocation


def row_changes(location: DatabaseLocation, manifest: Manifest) -> Preview:
    """The live database's row counts against those in *manifest*, table by table."""
    live = dialect_for(location).live_facts().tables
    return Preview(tables=[
        TableChange(name, live.get(name), manifest.tables.get(name),
                    _rows_lost(live.get(name), manifest.tables.get(name)))
        for name in sorted(set(live) | set(manifest.tables))
    ])


def _rows_lost(now: int | None, backup: int | None) -> int | None:
    """Exact where the counts decide it: a table the backup lacks loses every live row,
    one the live database lacks loses none. For a table on both sides it would take
    loading the archive to compare keys, so it stays None (printed '-': not counted)."""
    if now is None:
        return 0
    if backup is None:
        return now
    return None
