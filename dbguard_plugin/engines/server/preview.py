"""What restoring a server backup would change: rows per table, read-only.

The SQLite preview opens the backup as a database to find the open orders and trades it
lacks; a server archive cannot be queried in place, so this preview compares the live
row counts with the manifest's, after verifying the backup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.engines.preview import Preview, TableChange
from dbguard_plugin.engines.server import dialect_for
from dbguard_plugin.engines.sqlite.verify import verify_backup
from dbguard_plugin.errors import VerificationError

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard


def server_preview(guard: Guard, manifest: Manifest) -> Preview:
    result = verify_backup(guard.catalog, manifest)
    if not result.ok:
        guard.catalog.record_verification(manifest, False)
        raise VerificationError(f"backup {manifest.id} failed verification; nothing was "
                                "changed: " + "; ".join(result.problems))
    live = dialect_for(guard.location).live_facts().tables
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
