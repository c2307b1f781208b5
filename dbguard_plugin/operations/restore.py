"""The replacement engine: restore and rollback, atomic, verified, crash-safe.

Every replacement goes the same way: the guard allows it and the lease is held
exclusive; the backup is verified against its manifest before anything is touched; a
safety backup of the live database is taken and verified; the intent is journaled; the
snapshot is written INTO the live database with SQLite's backup API, which is one
journaled transaction (safe with the bot's connections open, no rename of a file that
may be open); the result is checked; on any failure the safety backup goes back the
same way. See DESIGN.md, "SQLite facts" 4 and 6.

What a restore needs (the backup, and its safety backup from the moment its id exists)
is pinned against prune in every process from its first step to its last. A journal
that recovery could not decide is carried in the restore's own (``previous``): the
restore settles it when it succeeds, and it is pending again when the restore is undone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import journal
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core import audit
from dbguard_plugin.crashpoints import reach
from dbguard_plugin.engines.preview import Preview, compute
from dbguard_plugin.engines.sqlite.backup import (
    NothingToBackUp,
    Progress,
    opened_copy,
    sqlite_uri,
)
from dbguard_plugin.engines.sqlite.facts import check, row_counts, schema_fingerprint
from dbguard_plugin.engines.sqlite.verify import verify_backup
from dbguard_plugin.errors import ConfigError, DbGuardError, VerificationError, VetoedError
from dbguard_plugin.events import Operation
from dbguard_plugin.files import write_json_atomic
from dbguard_plugin.verdict import Reason, Verdict

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard

LAST = "last-replacement.json"
GENERATION = "generation.json"


class RestoreError(DbGuardError):
    """A restore failed; the message says whether the database was put back."""


class LiveDatabaseBusy(RestoreError):
    """Another connection kept the live database locked past busy_timeout: the copy's
    transaction was rolled back, so nothing was written."""


#: sqlite3_backup_step's answers while another connection holds a lock it needs
_BUSY_OR_LOCKED = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: How long a backup step waits before it asks again: sleeping, never spinning.
_BUSY_SLEEP = 0.05


@dataclass(frozen=True)
class Outcome:
    operation: str
    backup_id: str
    safety_id: str
    database: str
    duration_s: float
    preview: dict[str, Any] | None = None
    #: the interrupted operation recovery could not decide that this one resolved, if any
    resolved: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_path(guard: Guard) -> Path:
    path = guard.location.sqlite_path
    if path is None:
        raise RestoreError(
            f"{guard.location.redacted}: restores of {guard.location.backend} databases are "
            "not supported by this version"
        )
    return path


def preview(guard: Guard, manifest: Manifest, *, rows_lost: bool = True) -> Preview:
    """What restoring *manifest* would change, read-only. The backup is checked first
    (sha256 and quick_check): a damaged file is never opened as a database."""
    guard.refuse_unguardable(Operation.RESTORE)
    if guard.location.sqlite_path is None:  # a server database: rows per table only
        from dbguard_plugin.engines.server.preview import server_preview

        return server_preview(guard, manifest)
    result = verify_backup(guard.catalog, manifest, "quick_check")
    if not result.ok:
        guard.catalog.record_verification(manifest, False)
        raise VerificationError(
            f"backup {manifest.id} failed verification; nothing was changed: "
            + "; ".join(result.problems)
        )
    with opened_copy(guard.catalog.data_path(manifest), manifest.compression,
                     guard.catalog.directory) as plain:
        return compute(live_path(guard), plain, guard.config.open_orders,
                       guard.config.open_trades, rows_lost=rows_lost)


def restore(
    guard: Guard,
    backup_id: str,
    *,
    force: bool = False,
    who: str | None = None,
    progress: Progress | None = None,
    operation: str = "restore",
    from_profile: str | None = None,
    from_environment: str = "",
) -> Outcome:
    """Write backup *backup_id* into the live database; see the module docstring.

    A backup taken in another profile needs *from_profile* naming it (and its
    *from_environment*); see :func:`check_profile`. From the first step to the last, the
    backup and (from the moment its id exists) the safety backup are pinned: a prune in
    any process, a cron job's, cannot take either.
    """
    with guard.catalog.pinning(operation):
        manifest = guard.catalog.pin(backup_id)
        check_profile(guard, manifest, from_profile, from_environment, force=force, who=who)
        if guard.location.sqlite_path is None:  # a server database: the servers' own engine
            from dbguard_plugin.operations.server_restore import restore_server

            return restore_server(guard, backup_id, force=force, who=who, operation=operation)
        if from_profile is None and not force and not guard.catalog.belongs_here(manifest.source):
            # A file copied in from another bot's catalog: its checksum is fine, it is
            # simply not this database.
            raise RestoreError(
                f"backup {manifest.id} in {guard.catalog.directory} was taken of "
                f"{manifest.source}, not of {guard.location.redacted}; nothing was changed. "
                "Restore it anyway with --force, or take it from its own profile with "
                "--from-profile NAME"
            )
        return _restore_sqlite(guard, manifest, force=force, who=who, progress=progress,
                               operation=operation)


def _restore_sqlite(guard: Guard, manifest: Manifest, *, force: bool, who: str | None,
                    progress: Progress | None, operation: str) -> Outcome:
    clock = time.monotonic()
    live = live_path(guard)
    with guard.operation(Operation.RESTORE, force=force, who=who):
        reach("restore:locked")
        previous = _settle(guard)
        _verify(guard, manifest)
        reach("restore:verified")
        stored = guard.catalog.data_path(manifest)
        with opened_copy(stored, manifest.compression, guard.catalog.directory) as plain:
            _check_compatible(live, manifest)
            _check_space(live, manifest)
            reach("restore:space-checked")
            changes = compute(live, plain, guard.config.open_orders,
                              guard.config.open_trades, rows_lost=False)
            vetoable = _not_reopened_by_last(guard, manifest, changes) \
                if operation == "rollback" else changes
            if vetoable.drops_open_positions:
                _allow_dropping(guard, manifest, vetoable, force, who, operation)
            safety = _safety_backup(guard, manifest, live)
            reach("restore:safety-done")
            intent = journal.Intent(
                operation=operation, step="restoring", backup_id=manifest.id,
                safety_id=safety.id if safety else "", database=guard.location.redacted,
                schema_version=schema_version(live), backup_sha256=manifest.sha256,
                safety_sha256=safety.sha256 if safety else "",
                previous=asdict(previous) if previous is not None else None,
            )
            journal.write(guard.location.state_dir, intent)
            reach("restore:journal-written")
            signals.notify(signals.restore_started, guard, backup_id=manifest.id,
                           operation=operation)
            _write(guard, intent, live, plain, manifest, progress)
        finish(guard, intent, reopened=_reopened(changes))
        replaced(guard, Operation.RESTORE, manifest.id, intent.safety_id, operation)  # lease held
    resolved = previous.operation if previous is not None else ""
    return Outcome(operation, manifest.id, intent.safety_id, guard.location.redacted,
                   round(time.monotonic() - clock, 3), changes.as_dict(), resolved)


def _settle(guard: Guard) -> journal.Intent | None:
    """With the lease ours, settle a journal this command's recovery had to leave (the
    lease was busy then). Returns the journal recovery could not decide, which this
    restore resolves when it succeeds (an operator's choice), or None."""
    state_dir = guard.location.state_dir
    if not journal.path_in(state_dir).exists():
        return None
    from dbguard_plugin.operations.recovery import recover

    recover(guard)
    pending = journal.read(state_dir)
    if pending is not None and not pending.undecided:
        raise RestoreError(
            f"the interrupted {pending.operation} journaled in {state_dir} could not be "
            "finished or undone yet (see the messages above); nothing was changed"
        )
    return pending


def _verify(guard: Guard, manifest: Manifest) -> None:
    result = verify_backup(guard.catalog, manifest, guard.config.restore_check)
    if not result.ok:
        guard.catalog.record_verification(manifest, False)
        raise VerificationError(
            f"backup {manifest.id} failed verification; nothing was changed: "
            + "; ".join(result.problems)
        )


def _safety_backup(guard: Guard, manifest: Manifest, live: Path) -> Manifest | None:
    """The pre-restore backup of the live database (pinned from its allocation, see
    restore()); None when there is no live database yet: nothing to put back."""
    try:
        # keep=: the prune after the safety backup must not take the one restored
        return guard.backup("pre-restore", keep=(manifest.id,))
    except NothingToBackUp:
        return None
    except VerificationError as exc:
        # The live database itself is damaged: replacing it is the point of this
        # restore. Keep it as found (unverified) so nothing is lost, and go on.
        log.warning("%s: the live database fails its check (%s); keeping it as "
                    "found in an unverified safety backup", live, exc)
        return guard.backup("pre-restore", keep=(manifest.id,), keep_damaged=True)


def _write(guard: Guard, intent: journal.Intent, live: Path, plain: Path,
           manifest: Manifest, progress: Progress | None) -> None:
    """The copy and its check; on failure the safety backup goes back, and RestoreError
    says whether it did."""
    try:
        counts = write_into(live, plain, guard.config.busy_timeout, progress)
        reach("restore:copied")
        # quick_check: the pages came from a backup verified moments ago; the
        # schema and row counts below catch a copy that went wrong
        post_check(live, manifest, "quick_check", counts)
        reach("restore:checked")
    except LiveDatabaseBusy as exc:
        # The copy never committed: there is nothing to put back.
        journal.undone(guard.location.state_dir, intent)
        signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                       error=str(exc), rolled_back=False)
        raise RestoreError(f"{intent.operation} of {intent.backup_id} failed: {exc}; the "
                           "database is exactly as it was") from None
    except Exception as exc:
        what = f"{intent.operation} of {intent.backup_id}"
        try:
            undone = _undo(guard, intent, live)
        except Exception as undo_exc:
            # e.g. the disk that filled during the copy is still full: the journal
            # stays, and the next dbguard command finishes the undo.
            signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                           error=str(exc), rolled_back=False)
            raise RestoreError(
                f"{what} into {live} failed ({exc}), and putting safety backup "
                f"{intent.safety_id} back failed too ({undo_exc}); the operation journal "
                "is kept: fix the cause (free disk space, permissions), then run any "
                "dbguard command (e.g. 'dbguard status') and it finishes putting the "
                "database back"
            ) from None
        signals.notify(signals.restore_failed, guard, backup_id=intent.backup_id,
                       error=str(exc), rolled_back=undone)
        state = (f"the database was put back from safety backup {intent.safety_id}"
                 if undone else "there was no live database to put back")
        raise RestoreError(f"{what} failed ({exc}); {state}") from None


def rollback(guard: Guard, *, force: bool = False, who: str | None = None,
             progress: Progress | None = None) -> Outcome:
    """Undo the last replacement by restoring its safety backup, through the same engine."""
    last = last_replacement(guard)
    if last is None or not last.get("safety_id"):
        raise RestoreError(
            f"nothing to roll back for {guard.location.redacted}: no replacement with a "
            "safety backup is recorded"
        )
    return restore(guard, str(last["safety_id"]), force=force, who=who, progress=progress,
                   operation="rollback")


def finish(guard: Guard, intent: journal.Intent,
           reopened: dict[str, list[str]] | None = None) -> None:
    """The last steps of a restore that committed and checked: record it, drop the journal.

    *reopened* names the orders and trades this replacement opened again (open in what
    it wrote, not before); a rollback of it may close exactly those without --force.
    """
    write_json_atomic(guard.location.state_dir / LAST, {
        "operation": intent.operation, "backup_id": intent.backup_id,
        "safety_id": intent.safety_id, "when": time.time(),
        "database": guard.location.redacted,
        **({"reopened": reopened} if reopened is not None else {}),
    })
    bump_generation(guard, intent.operation)
    reach("restore:recorded")
    for decided in journal.chain(intent)[1:]:  # an operator chose this over those
        audit.record_decision(guard.audit_path, audit.operator(), guard.location.redacted,
                              f"{intent.operation} of backup {intent.backup_id}", decided)
    journal.clear(guard.location.state_dir)
    reach("restore:done")


def replaced(guard: Guard, operation: Operation, backup_id: str, safety_id: str,
             kind: str) -> None:
    """Tell this process's host and every subscriber that the database changed."""
    guard.pm.hook.dbguard_refresh(guard=guard, operation=operation)
    signals.notify(signals.database_replaced, guard, operation=kind, backup_id=backup_id,
                   safety_id=safety_id)
    if kind == "rollback":
        signals.notify(signals.rolled_back, guard, backup_id=backup_id)


def last_replacement(guard: Guard) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(
            (guard.location.state_dir / LAST).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data


def bump_generation(guard: Guard, operation: str) -> None:
    """Other processes (the bot) notice a replacement through this file on their next
    tick and refresh their own state."""
    path = guard.location.state_dir / GENERATION
    try:
        current = int(json.loads(path.read_text(encoding="utf-8")).get("generation", 0))
    except (FileNotFoundError, ValueError, AttributeError):
        current = 0
    write_json_atomic(path, {"generation": current + 1, "operation": operation,
                             "when": time.time()})


def read_generation(state_dir: Path) -> int:
    try:
        return int(json.loads((state_dir / GENERATION).read_text(encoding="utf-8"))
                   .get("generation", 0))
    except (FileNotFoundError, ValueError, AttributeError):
        return 0


# -- the copy and the checks ------------------------------------------------------------


def schema_version(live: Path) -> int:
    if not live.exists():
        return 0
    # read-write: a hot journal left by a killed copy must be rolled back on this read
    conn = sqlite3.connect(sqlite_uri(live, "rw"), uri=True, timeout=30)
    try:
        return int(conn.execute("PRAGMA schema_version").fetchone()[0])
    finally:
        conn.close()


def write_into(live: Path, plain: Path, busy_timeout: float,
               progress: Progress | None = None,
               step_pages: int = 1024) -> dict[str, int] | None:
    """Write the SQLite file *plain* into the live database as ONE transaction.

    The backup API keeps its write transaction on the destination open across steps and
    commits only at the end, so a crash at any step leaves the old database (SQLite
    rolls the hot journal back, or ignores uncommitted WAL frames). Connections the bot
    keeps open see the new content at their next transaction.

    Returns the row counts of exactly what was written, or None when another connection
    committed in between (a bot with no order in flight may keep writing; its rows are
    then legitimately on top of the restored ones, and counts prove nothing).
    """
    src = sqlite3.connect(sqlite_uri(plain, "ro"), uri=True)
    mode = "rw" if live.exists() else "rwc"
    dst = sqlite3.connect(sqlite_uri(live, mode), uri=True, timeout=busy_timeout,
                          isolation_level=None)
    waiting_since: list[float] = []
    try:
        def step(status: int, remaining: int, total: int) -> None:
            if status in _BUSY_OR_LOCKED:
                _wait_or_give_up(live, busy_timeout, waiting_since)
                return
            waiting_since.clear()
            reach("restore:copying")
            if progress is not None:
                progress(total - remaining, total)

        # data_version changes only for other connections' commits (not for this one's
        # backup), and inside a read transaction it is that snapshot's: equal values
        # mean the counts below are of exactly the pages the backup wrote.
        before = dst.execute("PRAGMA data_version").fetchone()[0]
        src.backup(dst, pages=step_pages, progress=step, sleep=_BUSY_SLEEP)
        dst.execute("BEGIN")
        dst.execute("SELECT count(*) FROM sqlite_master").fetchone()
        undisturbed = dst.execute("PRAGMA data_version").fetchone()[0] == before
        counts = row_counts(dst) if undisturbed else None
        dst.execute("COMMIT")
        # Keep the WAL from holding a whole second copy; PASSIVE never waits on readers.
        dst.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return counts
    finally:
        dst.close()
        src.close()


def _wait_or_give_up(live: Path, busy_timeout: float, since: list[float]) -> None:
    """A backup step met another connection's lock (a rollback-journal reader keeps the
    copy from committing): the backup API sleeps between steps; past busy_timeout the
    copy is abandoned, and SQLite rolls its transaction back."""
    now = time.monotonic()
    if not since:
        since.append(now)
    elif now - since[0] >= busy_timeout:
        raise LiveDatabaseBusy(
            f"{live} stayed locked by another connection (a reader's or writer's open "
            f"transaction) for {busy_timeout:g} s, the busy_timeout; nothing was written. "
            f"Try again when it ends ('fuser {live}' names the processes that have it open)"
        )


def post_check(live: Path, manifest: Manifest, level: str,
               counts: dict[str, int] | None = None) -> None:
    """The written database: *level* check, the backup's schema, and (when *counts*, the
    row counts write_into saw right after its commit, are given) the backup's row counts."""
    conn = sqlite3.connect(sqlite_uri(live, "ro"), uri=True, timeout=30)
    try:
        problems = check(conn, level if level == "integrity_check" else "quick_check")
        if problems:
            raise VerificationError(f"{live}: {'; '.join(problems[:5])}")
        if manifest.schema_fingerprint and schema_fingerprint(conn) != manifest.schema_fingerprint:
            raise VerificationError(f"{live}: schema differs from backup {manifest.id}")
    finally:
        conn.close()
    if counts is not None and manifest.tables and counts != manifest.tables:
        raise VerificationError(f"{live}: row counts differ from backup {manifest.id}")


def _undo(guard: Guard, intent: journal.Intent, live: Path) -> bool:
    """Put the safety backup back, the same way. False when there is none."""
    if not intent.safety_id:
        journal.undone(guard.location.state_dir, intent)
        return False
    undo = intent.at("rolling-back")
    undo = journal.Intent(**{**asdict(undo), "schema_version": schema_version(live)})
    journal.write(guard.location.state_dir, undo)
    reach("restore:rolling-back")
    safety = guard.catalog.get(intent.safety_id)
    with opened_copy(guard.catalog.data_path(safety), safety.compression,
                     guard.catalog.directory) as plain:
        counts = write_into(live, plain, guard.config.busy_timeout)
    post_check(live, safety, "quick_check", counts)
    journal.undone(guard.location.state_dir, intent)
    return True


def check_profile(guard: Guard, manifest: Manifest, from_profile: str | None,
                  from_environment: str, *, force: bool = False, who: str | None = None) -> None:
    """Refuse a backup taken in another profile unless *from_profile* names that profile;
    a development or testing backup into a production profile needs *force* as well."""
    reason = profile_reason(guard, manifest, from_profile, from_environment)
    if reason is None:
        return
    verdict = Verdict(Operation.RESTORE, (reason,))
    if not force:
        raise VetoedError(verdict, f"restore: vetoed\n  - {reason.message}; nothing was changed")
    forced = dataclasses.replace(verdict, forced=True)
    audit.record_force(guard.audit_path, forced, who or audit.operator(), guard.location.redacted)


def profile_reason(guard: Guard, manifest: Manifest, from_profile: str | None,
                   from_environment: str) -> Reason | None:
    """The veto reason (overridable) for restoring a backup of another profile, if any;
    raises ConfigError when *from_profile* does not name the backup's profile."""
    mine, theirs = guard.config.profile, manifest.profile
    if not mine or not theirs or mine == theirs:
        return None
    into_production = guard.config.environment == "production" and \
        from_environment != "production"
    if from_profile != theirs:
        also = " and --force" if into_production else ""
        raise ConfigError(
            f"backup {manifest.id} was taken in profile {theirs}, not in {mine}; nothing "
            f"was changed. Restoring it here needs --from-profile {theirs}{also}"
        )
    if not into_production:
        return None
    return Reason(
        "cross-profile",
        f"backup {manifest.id} is from the {from_environment or 'unknown'} profile {theirs}; "
        f"restoring it into the production profile {mine} needs --force", True,
        {"from_profile": theirs, "profile": mine},
    )


def drop_reasons(changes: Preview) -> tuple[Reason, ...]:
    """The veto reasons for a restore that forgets open orders or trades."""
    return tuple(Reason("drops-open-positions", w, True) for w in changes.losses())


def _check_compatible(live: Path, manifest: Manifest) -> None:
    if not live.exists():
        return
    conn = sqlite3.connect(sqlite_uri(live, "rw"), uri=True, timeout=30)  # a hot journal
    try:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    if mode == "wal" and manifest.page_size and page_size != manifest.page_size:
        raise RestoreError(
            f"backup {manifest.id} has {manifest.page_size}-byte pages and {live} has "
            f"{page_size}-byte pages in WAL mode, which SQLite cannot write in place; nothing "
            f"was changed. Stop the bot, run: sqlite3 '{live}' 'PRAGMA journal_mode=DELETE', "
            "then restore again"
        )


def _check_space(live: Path, manifest: Manifest) -> None:
    free = shutil.disk_usage(live.parent if live.parent.exists() else Path(os.sep)).free
    need = manifest.raw_size * 2 + (16 << 20)  # the WAL or rollback journal, plus slack
    if free < need:
        raise RestoreError(
            f"{live.parent}: {free / 2**20:,.0f} MiB free, a restore of {manifest.id} needs "
            f"about {need / 2**20:,.0f} MiB; nothing was changed: free space first"
        )


def _reopened(changes: Preview) -> dict[str, list[str]]:
    return {"orders": list(changes.orders_resurrected),
            "trades": list(changes.trades_resurrected)}


def _not_reopened_by_last(guard: Guard, manifest: Manifest, changes: Preview) -> Preview:
    """A rollback's *changes* without the positions the replacement it undoes opened
    again: closing those puts back the state before the operator's own restore (the
    safety backup is that state), so it needs no --force. Positions opened since, by
    the bot, still count. Nothing is exempt when the record is not of this safety
    backup or predates ``reopened`` (a restore that recovery finished)."""
    last = last_replacement(guard) or {}
    reopened = last.get("reopened")
    if last.get("safety_id") != manifest.id or not isinstance(reopened, dict):
        return changes
    orders = {str(i) for i in reopened.get("orders", ())}
    trades = {str(i) for i in reopened.get("trades", ())}
    return dataclasses.replace(
        changes,
        open_orders_lost=[i for i in changes.open_orders_lost if i not in orders],
        open_trades_lost=[i for i in changes.open_trades_lost if i not in trades],
    )


def _allow_dropping(guard: Guard, manifest: Manifest, changes: Preview, force: bool,
                    who: str | None, operation: str = "restore") -> None:
    reasons = drop_reasons(changes)
    verdict = Verdict(Operation.RESTORE, reasons)
    if not force:
        if operation == "rollback":
            raise VetoedError(verdict, f"rollback to {manifest.id} would drop open positions "
                              "opened since the replacement it undoes; nothing was changed:\n"
                              + "\n".join(f"  - {r.message}" for r in reasons)
                              + "\nuse --force to roll back anyway")
        raise VetoedError(verdict, f"restoring {manifest.id} would drop open positions; "
                          "nothing was changed:\n" + "\n".join(f"  - {r.message}"
                                                               for r in reasons)
                          + "\nuse --force to restore anyway")
    forced = Verdict(Operation.RESTORE, reasons, forced=True)
    audit.record_force(guard.audit_path, forced, who or audit.operator(), guard.location.redacted)

