"""Which backups to keep: the last N, one per day for D days, one per week for W weeks,
one per month for M months, none older than an age limit but the last N.

Never the newest verified backup, never one a running or interrupted operation has
pinned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from dbguard_plugin.catalog import Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.catalog.repository import Collected, Repository
from dbguard_plugin.errors import VerificationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    keep_last: int = 10
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 0
    #: Days after which only keep_last, the newest verified backup and pins keep a
    #: backup; 0: no limit.
    max_age_days: int = 0


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
    day = 86_400
    limit = policy.max_age_days * day if policy.max_age_days else math.inf
    for span, count, bucket_of in (
        (day, policy.keep_daily, _utc_day),
        (7 * day, policy.keep_weekly, _iso_week),
        (31 * day, policy.keep_monthly, _utc_month),
    ):
        seen: set[tuple[int, int]] = set()
        for manifest in verified:  # newest first: the newest of each period stays
            bucket = bucket_of(manifest.created_ts)
            age = now - manifest.created_ts
            if bucket in seen or age > span * count or age > limit:
                continue
            seen.add(bucket)
            keep.add(manifest.id)
    return keep


def _utc_day(ts: float) -> tuple[int, int]:
    return (0, int(ts // 86_400))


def _utc_month(ts: float) -> tuple[int, int]:
    when = datetime.fromtimestamp(ts, tz=timezone.utc)
    return (when.year, when.month)


def _iso_week(ts: float) -> tuple[int, int]:
    """(ISO year, ISO week): weeks start on Monday, as operators count them."""
    year, week, _ = datetime.fromtimestamp(ts, tz=timezone.utc).isocalendar()
    return (year, week)


def prune(
    catalog: Catalog, policy: Retention, pinned: Iterable[str] = (), dry_run: bool = False,
    pins: Callable[[], Iterable[str]] | None = None,
) -> list[Manifest]:
    """Delete the backups *policy* does not keep; return them. Takes the catalog lock.

    Never one that *pinned*, a running operation's pin file or *pins()* names. Both are
    read under the lock, pin files first: an operation pins what it needs before the
    lock lets anyone see it, and releases its pin only after its journal or
    ``last-replacement.json`` (what *pins* reads) names it, so no read order of a prune
    can miss a backup an operation still needs.
    """
    with catalog.locked():
        held = catalog.pinned_ids(sweep=not dry_run)
        held.update(pins() if pins is not None else ())
        held.update(pinned)
        backups = catalog.manifests()
        keep = to_keep(backups, policy, held)
        doomed = [m for m in backups if m.id not in keep]
        if not dry_run:
            for manifest in doomed:
                catalog.delete(manifest)
            catalog.cleanup()
            collect(catalog)
        return doomed


def collect(catalog: Catalog) -> Collected | None:
    """Collect the repository's chunks that no manifest references any more (call with
    the catalog lock held). Not while a manifest is damaged: what it referenced cannot
    be known, and its backup is kept for an operator to look at."""
    repository = Repository.of(catalog.directory)
    if not repository.exists():
        return None
    backups, damaged = catalog.scan()
    if damaged:
        log.warning("dbguard: repository chunks not collected in %s: %d damaged "
                    "manifests ('dbguard backups' lists them)", catalog.directory,
                    len(damaged))
        return None
    try:
        collected = repository.collect(m.chunk_list for m in backups
                                       if m.storage == "repository")
    except VerificationError as exc:
        log.warning("dbguard: repository chunks not collected in %s: %s",
                    catalog.directory, exc)
        return None
    if collected.deferred:
        log.info("dbguard: repository collection deferred: %s", collected.deferred)
    return collected
