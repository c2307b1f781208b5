"""The ``dbguard`` command.

Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 vetoed,
4 verification failed, 5 undecided (``dbguard recover``: an interrupted operation
awaits the operator's decision).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from dbguard_plugin.errors import ConfigError, DbGuardError
from dbguard_plugin.events import Operation
from dbguard_plugin.location import redact
from dbguard_plugin.version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_VETOED, EXIT_VERIFY = 0, 1, 2, 3, 4
#: ``dbguard recover``: an interrupted operation awaits the operator's decision.
EXIT_UNDECIDED = 5

F = TypeVar("F", bound=Callable[..., Any])


class Options:
    """Options that every command accepts, before or after the command name."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.db: str | None = None
        self.profile: str | None = None
        self.json = False


def _set(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(Options), name, value)
        return value

    return callback


def _verbose(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    if value:
        logging.getLogger("dbguard_plugin").setLevel(logging.INFO)
    return value


def common(func: F) -> F:
    """Add --config, --db, --profile, --json and -v to a command."""
    func = click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose,
        help="Log what dbguard does to stderr.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, default=None, expose_value=False,
        callback=_set("json"), help="Print machine-readable JSON.",
    )(func)
    func = click.option(
        "--profile", metavar="NAME", expose_value=False, callback=_set("profile"),
        help="Environment profile to use instead of the active one (see 'dbguard profile').",
    )(func)
    func = click.option(
        "--db", metavar="URL", expose_value=False, callback=_set("db"),
        help="Database as a SQLAlchemy URL, e.g. sqlite:////path/tradesv3.sqlite "
        "(overrides the config; env DBGUARD_DB).",
    )(func)
    func = click.option(
        "--config", metavar="PATH", expose_value=False, callback=_set("config"),
        help="Bot config file: JSON with a \"dbguard\" object or TOML with [dbguard] "
        "(env DBGUARD_CONFIG).",
    )(func)
    return func


_OPENED = "dbguard.database"


def handle_errors(func: F) -> F:
    """Turn dbguard's errors into a message on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            # Disk full, a directory that is a file, a permission: say which file, no trace.
            where = f"{exc.filename}: " if exc.filename else ""
            _fail(DbGuardError(f"{where}{exc.strerror or exc}"))
        except DbGuardError as exc:
            _fail(exc)
        except sqlite3.DatabaseError as exc:
            # A database SQLite cannot read (damaged beyond quick_check): name it and say
            # what to do, never a traceback.
            ctx = click.get_current_context(silent=True)
            opened = ctx.meta.get(_OPENED) if ctx is not None else None
            db = opened or _options().db or config_path() or "database"
            _fail(DbGuardError(
                f"{db}: SQLite cannot read it ({exc}); see the runbook, 'Corrupt database': "
                "stop the bot, move the damaged file aside together with its -wal, -shm "
                "and -journal, then 'dbguard restore ID --yes'"
            ))

    return wrapper  # type: ignore[return-value]


def _fail(exc: DbGuardError) -> NoReturn:
    """Report *exc* (as JSON with --json) and exit with its code."""
    message = redact(str(exc))
    if _options().json:
        verdict = getattr(exc, "verdict", None)
        body: dict[str, Any] = {"error": message, "exit_code": exc.exit_code}
        if verdict is not None:
            body["verdict"] = verdict.as_dict()
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"dbguard: {message}", err=True)
    sys.exit(exc.exit_code)


def _options() -> Options:
    return click.get_current_context().ensure_object(Options)


def config_path() -> str | None:
    return _options().config or os.environ.get("DBGUARD_CONFIG")


def open_guard(recover: bool = True) -> Any:
    """The Guard for --db / --config; first finishes or undoes an interrupted operation."""
    from dbguard_plugin.core.guard import Guard

    opts = _options()
    path = config_path()
    db = opts.db or os.environ.get("DBGUARD_DB")
    guard = Guard.from_config(path, db_url=db, profile=opts.profile) \
        if path is not None or db is not None or _profile_database(opts.profile) else None
    if guard is None:
        raise ConfigError(
            "no database given: use --db URL (e.g. --db sqlite:////path/tradesv3.sqlite) "
            "or --config PATH to the bot's config file"
        )
    # This invocation's database (redacted), for errors that cannot name it themselves.
    click.get_current_context().meta[_OPENED] = guard.location.redacted
    if recover:
        said = guard.recover()
        for sentence in said:
            click.echo(f"dbguard: recovered: {sentence}", err=True)
        if said:  # a finished move may have changed the configuration itself
            guard = Guard.from_config(path, db_url=db, profile=opts.profile)
        _report_undecided(guard)
    return guard


def _report_undecided(guard: Any) -> None:
    """Tell the operator, on stderr and before the command's own output, about an
    interrupted operation that awaits their decision; the command itself goes on."""
    from dbguard_plugin.operations.recovery import undecided

    pending = undecided(guard)
    for line in pending.lines() if pending is not None else ():
        click.echo(f"dbguard: {line}", err=True)


def _profile_database(name: str | None) -> bool:
    """True when the selected (or active) profile names its own database."""
    from dbguard_plugin.settings.profile_file import ProfileStore

    store = ProfileStore.locate(None)
    profile = store.get(name) if name is not None else store.active()
    return profile is not None and profile.db_url is not None


def confirm(question: str, yes: bool) -> None:
    """Ask before a replacement; --yes answers for scripts. Exit 1 on no, 2 without a tty."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} needs confirmation: pass --yes to go ahead without "
                          "being asked (no terminal to ask on)")
    if not click.confirm(question, default=False, err=True):
        raise DbGuardError("aborted; nothing was changed")


def emit(data: Any, human: str) -> None:
    if _options().json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(human)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dbguard")
@common
def cli() -> None:
    """Guard a trading bot's database: no risky operation while orders are in flight.

    Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 3 vetoed,
    4 verification failed, 5 undecided (dbguard recover).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@common
@handle_errors
def status() -> None:
    """Show the lease, who holds it and why, and this configuration."""
    guard = open_guard()
    data = {**guard.status(), "profile": guard.config.profile or None}
    emit(data, _render_status(data))


@cli.command()
@click.argument("operation", metavar="OPERATION")
@common
@handle_errors
def check(operation: str) -> None:
    """Would OPERATION be allowed now? Exit 3 with every reason when vetoed.

    OPERATION is one of: restore, replace, move, profile_switch, migrate, vacuum, delete.
    """
    try:
        op = Operation.parse(operation)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    guard = open_guard()
    verdict = guard.check(op)
    lines = [verdict.summary()] + [f"  ! {w}" for w in verdict.warnings]
    emit(verdict.as_dict(), "\n".join(lines))
    if not verdict.allowed:
        sys.exit(EXIT_VETOED)


@cli.command()
@click.option("--reason", metavar="TEXT", default="manual", show_default=True,
              help="Why: one of manual, scheduled, pre-restore, ... or free text (kept as "
              "a note of a manual backup).")
@common
@handle_errors
def backup(reason: str) -> None:
    """Take a verified hot backup of the live database now."""
    from dbguard_plugin.catalog.manifest import REASONS
    from dbguard_plugin.progress import LazyBar

    guard = open_guard()
    kind, note = (reason, "") if reason in REASONS else ("manual", reason)
    with LazyBar("backing up", enabled=not _options().json) as bar:
        manifest = guard.backup(kind, note=note, progress=bar)
    path = guard.catalog.data_path(manifest)
    emit(
        {**manifest.as_dict(), "path": str(path)},
        f"backup {manifest.id} verified: {_size(manifest.size)}, "
        f"{sum(manifest.tables.values()):,} rows in {len(manifest.tables)} tables, "
        f"{manifest.duration_s:.2f} s\n  {path}\n  sha256 {manifest.sha256}",
    )


@cli.command()
@common
@handle_errors
def backups() -> None:
    """List the backups in the catalog, oldest first."""
    guard = open_guard()
    rows = [
        {
            "id": m.id, "time": m.created, "reason": m.reason, "size": m.size,
            "sha256": m.sha256, "verified": m.verified,
            "path": str(guard.catalog.directory / m.file), "note": m.note,
        }
        for m in guard.catalog.manifests()
    ]
    damaged = guard.catalog.damaged()
    if _options().json:
        emit(rows + [damaged_row(d) for d in damaged], "")
        return
    if not rows and not damaged:
        click.echo(f"no backups in {guard.catalog.directory}; 'dbguard backup' makes one")
        return
    click.echo(f"{'ID':<38} {'TIME (UTC)':<24} {'REASON':<14} {'SIZE':>10} VERIFIED SHA256")
    for r in rows:
        click.echo(
            f"{r['id']:<38} {r['time']:<24} {r['reason']:<14} {_size(int(r['size'])):>10} "
            f"{'yes' if r['verified'] else 'NO':<8} {str(r['sha256'])[:12]}"
        )
        if r["note"]:  # free text of any length: on its own line, under its backup
            click.echo(f"  note: {r['note']}")
    for d in damaged:
        click.echo(d.line())
    click.echo(f"{len(rows)} backups in {guard.catalog.directory}"
               + (f"; {len(damaged)} damaged manifests, never used" if damaged else ""))


@cli.command()
@click.argument("backup_id", metavar="[ID]", required=False)
@click.option("--all", "check_all", is_flag=True, help="Verify every backup.")
@click.option("--level", type=click.Choice(["quick_check", "integrity_check"]),
              default="integrity_check", show_default=True, help="SQLite check to run.")
@common
@handle_errors
def verify(backup_id: str | None, check_all: bool, level: str) -> None:
    """Recompute sha256 and run integrity_check on ID (or --all). Exit 4 on any problem."""
    from dbguard_plugin.engines.sqlite.verify import verify_backup
    from dbguard_plugin.progress import LazyBar

    if bool(backup_id) == check_all:
        raise ConfigError("give one backup ID or --all ('dbguard backups' lists the ids)")
    guard = open_guard()
    manifests = guard.catalog.manifests() if check_all else [_to_verify(guard, backup_id or "")]
    damaged = guard.catalog.damaged() if check_all else []
    results = []
    with LazyBar("verifying", enabled=not _options().json) as bar:
        for n, manifest in enumerate(manifests):
            bar(n, len(manifests))  # a bar after a second, counted in backups
            results.append(verify_backup(guard.catalog, manifest, level))
        bar(len(manifests), len(manifests))
    for result in results:
        guard.catalog.record_verification(result.manifest, result.ok)
    lines = []
    for result in results:
        if result.ok:
            lines.append(f"ok   {result.manifest.id}")
        else:
            lines += [f"BAD  {result.manifest.id}"] + [f"     {p}" for p in result.problems]
    lines += [d.line() for d in damaged]
    bad = [r for r in results if not r.ok]
    lines.append(f"{len(results) - len(bad)} ok, {len(bad)} bad"
                 + (f", {len(damaged)} damaged manifests" if damaged else ""))
    emit({"results": [r.as_dict() for r in results],
          "damaged": [d.as_dict() for d in damaged], "ok": not bad and not damaged},
         "\n".join(lines))
    if bad or damaged:
        sys.exit(EXIT_VERIFY)


def _to_verify(guard: Any, backup_id: str) -> Any:
    """The manifest of *backup_id*; an id the catalog lacks fails verification (exit 4):
    a cron job verifying a backup it expects must hear that it is gone."""
    from dbguard_plugin.catalog import BackupNotFound
    from dbguard_plugin.errors import VerificationError

    try:
        return guard.catalog.get(backup_id)
    except BackupNotFound as exc:
        raise VerificationError(f"verification failed: no such backup: {exc}") from None


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@common
@handle_errors
def prune(dry_run: bool) -> None:
    """Delete backups the retention policy (keep_last, keep_daily, keep_weekly) drops."""
    guard = open_guard()
    removed = guard.prune(dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit(
        {"dry_run": dry_run, "removed": [m.id for m in removed]},
        "\n".join([f"{verb} {m.id}" for m in removed] + [f"{verb} {len(removed)} backups"]),
    )


@cli.command()
@common
@handle_errors
def doctor() -> None:
    """Check journal mode, busy timeout, free space, permissions and backup age."""
    from dbguard_plugin.operations.doctor import FAIL, diagnose

    guard = open_guard()
    findings = diagnose(guard)
    emit(
        {"findings": [f.as_dict() for f in findings],
         "ok": all(f.status != FAIL for f in findings)},
        "\n".join(f"{f.status.upper():<4} {f.check}: {f.message}" for f in findings),
    )
    if any(f.status == FAIL for f in findings):
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.argument("backup_id", metavar="ID")
@click.option("--preview", is_flag=True, help="Only show what the restore would change.")
@click.option("--force", is_flag=True,
              help="Override an active session, plugin vetoes and dropping open positions "
              "(recorded in the audit log; never orders in flight).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--from-profile", metavar="NAME",
              help="Restore a backup taken in profile NAME, from its catalog (into a "
              "production profile a development or testing backup needs --force too).")
@common
@handle_errors
def restore(backup_id: str, preview: bool, force: bool, yes: bool,
            from_profile: str | None) -> None:
    """Restore backup ID into the live database: verified, atomic, with a safety backup.

    Exit 3 when vetoed (orders in flight, an active session, open positions the backup
    lacks without --force), 4 when the backup fails verification.
    """
    from dbguard_plugin.catalog import validate_id
    from dbguard_plugin.operations import restore as engine
    from dbguard_plugin.progress import LazyBar

    validate_id(backup_id)
    guard = open_guard()
    guard.refuse_unguardable(Operation.RESTORE)
    manifest, source_env = _restore_source(guard, backup_id, from_profile, force)
    # Wherever the table is printed, LOST is counted (a scan by primary key): a '-' there
    # read as "nothing lost" to operators restoring with --yes. Only --json without
    # --preview prints no table, so only it skips the scan.
    changes = engine.preview(guard, manifest, rows_lost=preview or not _options().json)
    if preview or not _options().json:
        emit({"backup": manifest.as_dict(), "preview": changes.as_dict()},
             f"restore {manifest.id} ({manifest.reason}, {manifest.created}) into "
             f"{guard.location.redacted}:\n{changes.render()}")
    if preview:
        return
    if changes.drops_open_positions and not force:
        from dbguard_plugin.errors import VetoedError
        from dbguard_plugin.verdict import Verdict

        verdict = Verdict(Operation.RESTORE, engine.drop_reasons(changes))
        raise VetoedError(verdict, f"restoring {manifest.id} would drop open positions; "
                          "nothing was changed. Use --force to restore anyway")
    confirm(f"Restore {manifest.id} into {guard.location.redacted}?", yes)
    with LazyBar("restoring", enabled=not _options().json) as bar:
        outcome = engine.restore(guard, manifest.id, force=force, progress=bar,
                                 from_profile=from_profile, from_environment=source_env)
    emit(outcome.as_dict(),
         f"restored {outcome.backup_id} in {outcome.duration_s:.2f} s; "
         f"'dbguard rollback' puts back safety backup {outcome.safety_id or '(none)'}"
         + _resolved(outcome))


def _restore_source(guard: Any, backup_id: str, from_profile: str | None,
                    force: bool) -> tuple[Any, str]:
    """The backup to restore and its profile's environment: with --from-profile, brought
    from that profile's catalog; refused early when it belongs to another profile."""
    from dbguard_plugin.catalog import BackupNotFound
    from dbguard_plugin.errors import VetoedError
    from dbguard_plugin.operations import restore as engine
    from dbguard_plugin.settings.profile_file import ProfileStore, fetch_backup
    from dbguard_plugin.verdict import Verdict

    store = ProfileStore.locate(config_path())
    db = _options().db or os.environ.get("DBGUARD_DB")
    if from_profile is None:
        try:
            return guard.catalog.get(backup_id), ""
        except BackupNotFound:
            holder = store.holder_of(backup_id, db)
            if holder is None:
                raise
            also = " and --force" if guard.config.environment == "production" and \
                store.get(holder).environment != "production" else ""
            raise ConfigError(f"backup {backup_id} is in the catalog of profile {holder}, not "
                              f"of {guard.config.profile or 'this database'}; restoring it "
                              f"here needs --from-profile {holder}{also}") from None
    manifest, environment = store.peek_backup(backup_id, from_profile, db)
    reason = engine.profile_reason(guard, manifest, from_profile, environment)
    if reason is not None and not force:  # nothing is copied or changed for a refusal
        raise VetoedError(Verdict(Operation.RESTORE, (reason,)),
                          f"restore: vetoed\n  - {reason.message}; nothing was changed")
    return fetch_backup(store, guard, backup_id, from_profile, db)


@cli.command()
@click.option("--force", is_flag=True,
              help="Override an active session, plugin vetoes and dropping open positions "
              "(recorded in the audit log; never orders in flight).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common
@handle_errors
def rollback(force: bool, yes: bool) -> None:
    """Undo the last restore, rollback or recovery from its safety backup."""
    from dbguard_plugin.operations import restore as engine
    from dbguard_plugin.progress import LazyBar

    guard = open_guard()
    guard.refuse_unguardable(Operation.RESTORE)
    last = engine.last_replacement(guard)
    if last is None or not last.get("safety_id"):
        raise engine.RestoreError(f"nothing to roll back for {guard.location.redacted}")
    confirm(f"Roll back the last {last.get('operation')} (of {last.get('backup_id')}) by "
            f"restoring safety backup {last['safety_id']}?", yes)
    with LazyBar("rolling back", enabled=not _options().json) as bar:
        outcome = engine.rollback(guard, force=force, progress=bar)
    emit(outcome.as_dict(),
         f"rolled back: the database holds {outcome.backup_id} again "
         f"({outcome.duration_s:.2f} s); safety backup {outcome.safety_id or '(none)'}"
         + _resolved(outcome))


def _resolved(outcome: Any) -> str:
    if not outcome.resolved:
        return ""
    return (f"\nthis settles the interrupted {outcome.resolved} that recovery could not "
            "decide (recorded in the audit log)")


@cli.command()
@click.option("--keep", is_flag=True,
              help="Keep the database as it is now and close the interrupted operation "
              "recovery could not decide (recorded in the audit log).")
@common
@handle_errors
def recover(keep: bool) -> None:
    """Finish or undo an interrupted operation, or show why recovery could not decide.

    Exit 0 when nothing is left pending, 5 when an interrupted operation awaits your
    decision ('dbguard recover --keep', or 'dbguard restore SAFETY_ID --yes'), 1 when
    one waits for the lease (a bot has orders in flight).
    """
    from dbguard_plugin.catalog import journal
    from dbguard_plugin.core import audit
    from dbguard_plugin.operations import recovery

    guard = open_guard(recover=False)
    if keep:
        kept = recovery.keep(guard, audit.operator())
        safety = (f"; safety backup {kept.safety_id} stays in the catalog as an ordinary "
                  "backup" if kept.safety_id else "")
        emit({"kept": kept.as_dict()},
             f"kept {kept.database} as it is: the interrupted {kept.operation} is closed "
             f"(recorded in {guard.audit_path}){safety}")
        return
    said = recovery.recover(guard, reexamine=True)
    pending = recovery.undecided(guard)
    waiting = pending is None and journal.path_in(guard.location.state_dir).exists()
    lines = [f"recovered: {sentence}" for sentence in said]
    if pending is not None:
        lines += pending.lines()
    elif waiting:
        lines.append("an interrupted operation waits for the lease (a bot has orders in "
                     "flight, or an operation runs): run 'dbguard recover' again when the "
                     "bot is idle")
    elif not said:
        lines.append(f"nothing to recover for {guard.location.redacted}")
    emit({"recovered": said, "undecided": pending.as_dict() if pending else None,
          "waiting": waiting}, "\n".join(lines))
    if pending is not None:
        sys.exit(EXIT_UNDECIDED)
    if waiting:
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.argument("new_path", metavar="NEW_PATH")
@click.option("--delete-old", is_flag=True,
              help="Delete the old file (and its -wal/-shm/-journal) after the copy verified.")
@click.option("--force", is_flag=True, help="Override an active session and plugin vetoes.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common
@handle_errors
def move(new_path: str, delete_old: bool, force: bool, yes: bool) -> None:
    """Move the SQLite database to NEW_PATH (a file or a directory) and switch the config."""
    from dbguard_plugin.operations import move as engine
    from dbguard_plugin.progress import LazyBar

    guard = open_guard()
    guard.refuse_unguardable(Operation.MOVE)
    confirm(f"Move {guard.location.redacted} to {new_path}?", yes)
    with LazyBar("copying", enabled=not _options().json) as bar:
        outcome = engine.move(guard, new_path, config_path=config_path(),
                              delete_old=delete_old, force=force, progress=bar)
    lines = [f"moved {outcome.old_path} -> {outcome.new_path} ({outcome.duration_s:.2f} s)",
             f"  config updated: {'yes' if outcome.config_updated else 'no'}; backups moved: "
             f"{'yes' if outcome.backups_moved else 'no'}; old file "
             f"{'deleted' if outcome.deleted_old else 'kept'}"]
    lines += [f"  ! {note}" for note in outcome.notes]
    emit(outcome.as_dict(), "\n".join(lines))


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo directory afterwards.")
@common
@handle_errors
def demo(keep: bool) -> None:
    """Run a paper-trading bot and an operator against a throw-away SQLite file."""
    from dbguard_plugin.cli.demo import run_demo

    opts = _options()
    sys.exit(run_demo(db_url=opts.db, keep=keep, as_json=opts.json, echo=click.echo))


def damaged_row(damaged: Any) -> dict[str, Any]:
    """A damaged manifest as a row of 'dbguard backups --json': its file's id, and why in
    "damaged" (a sound backup's row has no such key)."""
    return {"id": damaged.file.removesuffix(".json"), "time": None, "reason": None,
            "size": None, "sha256": None, "verified": False, "path": damaged.path,
            "note": "", "damaged": damaged.why}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _render_status(data: dict[str, Any]) -> str:
    lease = data["lease"]
    lines = [
        f"database:    {data['database']}",
        *([f"file:        {data['file']}"] if data.get("file") else []),
        f"environment: {data['environment']}" + ("" if data["enabled"] else " (disabled)")
        + (f" (profile {data['profile']})" if data.get("profile") else ""),
        f"state dir:   {data['state_dir']}",
        f"orders lock: {lease['orders']}",
        f"session:     {lease['session']}",
    ]
    for holder in lease["holders"]:
        if holder["role"] == "operation":
            lines.append(f"  pid {holder['pid']} on {holder['host']}: {holder['operation']}")
            continue
        orders = ", ".join(str(o.get("order_id")) for o in holder["orders_in_flight"]) or "none"
        session = (holder["session"] or {}).get("session_id", "none")
        lines.append(
            f"  bot pid {holder['pid']} on {holder['host']}: session {session}, "
            f"orders in flight: {orders}"
        )
    lines.append(f"plugins:     {', '.join(data['plugins'])}")
    lines += [f"  ! {warning}" for warning in data.get("warnings", ())]
    return "\n".join(lines)


def main() -> None:
    cli(prog_name="dbguard")


from dbguard_plugin.cli.profile import profile  # noqa: E402  (it builds on the helpers above)

cli.add_command(profile)
