"""Which backups to keep: the last N, one per day for D days, one per week for W weeks.

Never the newest verified backup, never one a pending operation has pinned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.manifest import Manifest


@dataclass(frozen=True)
class Retention:
    keep_last: int = 10
    keep_daily: int = 7
    keep_weekly: int = 4


def to_keep(
    backups: list[Manifest], policy: Retention, pinned: Iterable[str] = (), now: float | None = None
) -> set[str]:
    """Ids of the backups *policy* keeps (backups may come in any order)."""
    now = time.time() if now is None else now
    newest_first = sorted(backups, key=lambda m: (m.created_ts, m.id), reverse=True)
    keep = {m.id for m in newest_first[: max(policy.keep_last, 0)]}
    verified = [m for m in newest_first if m.verified]
    if verified:
        keep.add(verified[0].id)
    keep.update(pinned)
    day, week = 86_400, 7 * 86_400
    for span, count in ((day, policy.keep_daily), (week, policy.keep_weekly)):
        seen: set[int] = set()
        for manifest in verified:
            bucket = int(manifest.created_ts // span)
            if bucket in seen or now - manifest.created_ts > span * count:
                continue
            seen.add(bucket)
            keep.add(manifest.id)
    return keep


def prune(
    catalog: Catalog, policy: Retention, pinned: Iterable[str] = (), dry_run: bool = False
) -> list[Manifest]:
    """Delete the backups *policy* does not keep; return them. Takes the catalog lock."""
    with catalog.locked():
        backups = catalog.manifests()
        keep = to_keep(backups, policy, pinned)
        doomed = [m for m in backups if m.id not in keep]
        if not dry_run:
            for manifest in doomed:
                catalog.delete(manifest)
            catalog.cleanup()
        return doomed
