"""``dbguard profile``: list, show, create, update, delete and switch environment profiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from dbguard_plugin.cli.options import (
    common,
    config_path,
    confirm,
    db_url,
    emit,
    handle_errors,
    progress_shown,
    yes_option,
)
from dbguard_plugin.errors import ConfigError, DbGuardError
from dbguard_plugin.location import locate, redact
from dbguard_plugin.progress import LazyBar
from dbguard_plugin.settings.profiles import KINDS, STRICTNESS, Profile

if TYPE_CHECKING:
    from dbguard_plugin.operations.profile_store import ProfileStore


def _store() -> ProfileStore:
    """The profiles of --config's bot config (or of the user)."""
    # why here: costly, as the guard is (see cli.database)
    from dbguard_plugin.operations.profile_store import ProfileStore

    return ProfileStore.locate(config_path())


def _settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that set a profile's values, shared by create and update."""
    options = [
        click.option("--description", metavar="TEXT", help="One line about the profile."),
        click.option("--require-backup/--no-require-backup", "require_backup", default=None,
                     help="Pause new orders until a session-start backup verified "
                     "(default: in production only)."),
        click.option("--strictness", type=click.Choice(list(STRICTNESS)),
                     help="How an active session is treated: strict vetoes every risky "
                     "operation, standard only those that need the bot stopped, relaxed "
                     "only warns (default: by kind). Orders in flight always veto."),
        click.option("--keep-weekly", type=int, metavar="N", help="Retention: weekly backups."),
        click.option("--keep-daily", type=int, metavar="N", help="Retention: daily backups."),
        click.option("--keep-last", type=int, metavar="N", help="Retention: newest backups."),
        click.option("--catalog-dir", metavar="DIR",
                     help="The profile's backup directory (relative: to the profiles file)."),
        click.option("--db-url", metavar="URL",
                     help="The profile's database, a SQLAlchemy URL (default: the bot "
                     "config's db_url or --db)."),
    ]
    for option in options:
        func = option(func)
    return func


def _values(**given: Any) -> dict[str, Any]:
    names = {"require_backup": "require_backup_before_session"}
    return {names.get(k, k): v for k, v in given.items() if v is not None}


@click.group()
@common
def profile() -> None:
    """Environment profiles: development, testing, production and your own.

    Each profile has its own database, backup catalog, retention and strictness. The
    active one applies to every command (and to the bot) until 'dbguard profile switch'.
    """


@profile.command("list")
@common
@handle_errors
def list_profiles() -> None:
    """List the profiles; the active one is marked with '*'."""
    store = _store()
    contents = store.read()
    rows = [{**p.as_dict(), "active": p.name == contents.active} for p in contents.profiles]
    lines = [f"  {'NAME':<20} {'KIND':<12} {'STRICTNESS':<10} DATABASE"]
    for p in contents.profiles:
        mark = "*" if p.name == contents.active else " "
        db = redact(p.db_url) if p.db_url else "(the bot config's db_url)"
        lines.append(f"{mark} {p.name:<20} {p.kind:<12} {p.effective_strictness:<10} {db}")
    if contents.active is None:
        lines.append("no active profile: the bot config's own settings apply "
                     "('dbguard profile switch NAME' picks one)")
    lines.append(f"profiles file: {store.path}" + ("" if contents.exists else " (not yet)"))
    emit({"file": str(store.path), "exists": contents.exists, "active": contents.active,
          "profiles": rows}, "\n".join(lines))


@profile.command()
@click.argument("name", metavar="[NAME]", required=False)
@common
@handle_errors
def show(name: str | None) -> None:
    """Show profile NAME (default: the active one) as dbguard applies it."""
    store = _store()
    active = store.active_name()
    chosen = name or active
    if chosen is None:
        raise ConfigError("no active profile yet; name one ('dbguard profile show NAME') or "
                          "pick one with 'dbguard profile switch NAME'")
    found = store.get(chosen)
    data: dict[str, Any] = {**found.as_dict(), "active": chosen == active,
                            "file": str(store.path)}
    try:
        config = store.config(chosen, None if found.db_url else db_url())
    except DbGuardError as exc:
        config, data["problem"] = None, redact(str(exc))
    if config is not None:
        catalog = config.backup_dir or (
            str(locate(config.db_url, config.state_dir).state_dir / "backups")
            if config.db_url else None)
        data["resolved"] = {
            "database": redact(config.db_url) if config.db_url else None,
            "catalog_dir": catalog,
            "keep_last": config.keep_last, "keep_daily": config.keep_daily,
            "keep_weekly": config.keep_weekly, "environment": config.environment,
            "session_vetoes": [op.value for op in config.vetoed_by_session],
            "require_backup_before_session": config.requires_backup_before_session,
        }
    lines = [f"profile:     {chosen}" + (" (active)" if chosen == active else ""),
             f"kind:        {found.kind}",
             f"strictness:  {found.effective_strictness}"]
    resolved = data.get("resolved")
    if resolved:
        catalog = resolved["catalog_dir"] or "(none: no database)"
        lines += [
            f"database:    {resolved['database'] or '(none: give --config or --db)'}",
            f"backups:     {catalog}",
            f"retention:   keep_last {resolved['keep_last']}, keep_daily "
            f"{resolved['keep_daily']}, keep_weekly {resolved['keep_weekly']}",
            "session vetoes: " + (", ".join(resolved["session_vetoes"]) or "none (warns)"),
            f"backup before session: {'required' if resolved['require_backup_before_session'] else 'not required'}",  # noqa: E501
        ]
    if "problem" in data:
        lines.append(f"! {data['problem']}")
    if found.description:
        lines.append(f"description: {found.description}")
    emit(data, "\n".join(lines))


@profile.command()
@click.argument("name", metavar="NAME")
@click.option("--kind", type=click.Choice(list(KINDS)), default="custom", show_default=True,
              help="The environment: its defaults for strictness and backups.")
@_settings
@common
@handle_errors
def create(name: str, kind: str, **given: Any) -> None:
    """Create profile NAME."""
    store = _store()
    created = store.create(Profile(name, kind=kind).changed(str(store.path), **_values(**given)))
    emit({**created.as_dict(), "file": str(store.path)},
         f"created profile {created.name} ({created.kind}) in {store.path}")


@profile.command()
@click.argument("name", metavar="NAME")
@click.option("--kind", type=click.Choice(list(KINDS)), help="The environment.")
@_settings
@click.option("--unset", "unset", multiple=True, metavar="KEY",
              help="Unset a value (db_url, catalog_dir, keep_last, keep_daily, keep_weekly, "
              "strictness, require_backup_before_session, description); repeatable.")
@common
@handle_errors
def update(name: str, kind: str | None, unset: tuple[str, ...], **given: Any) -> None:
    """Change settings of profile NAME."""
    allowed = {"db_url", "catalog_dir", "keep_last", "keep_daily", "keep_weekly",
               "strictness", "require_backup_before_session", "description"}
    wrong = [key for key in unset if key not in allowed]
    if wrong:
        raise ConfigError(f"--unset {wrong[0]}: not a setting that can be unset; one of "
                          + ", ".join(sorted(allowed)))
    changes = {**_values(**given), **({"kind": kind} if kind else {}),
               **{key: None for key in unset}}
    if not changes:
        raise ConfigError("nothing to change: give an option such as --db-url URL "
                          "('dbguard profile update --help' lists them)")
    store = _store()
    updated = store.update(name, **changes)
    emit({**updated.as_dict(), "file": str(store.path)},
         f"updated profile {name}: " + ", ".join(sorted(changes)))


@profile.command()
@click.argument("name", metavar="NAME")
@click.option("--force", is_flag=True, help="Delete a production profile too.")
@click.option("--delete-data", is_flag=True,
              help="Also delete the profile's own database file and its backups (asks first).")
@yes_option
@common
@handle_errors
def delete(name: str, force: bool, delete_data: bool, yes: bool) -> None:
    """Delete profile NAME; its database and backups stay unless --delete-data."""
    store = _store()
    if delete_data:
        confirm(f"Delete profile {name} AND its database and backups?", yes)
    outcome = store.delete(name, force=force, delete_data=delete_data)
    lines = [f"deleted profile {name}"]
    lines += [f"  deleted {path}" for path in outcome.deleted]
    lines += [f"  kept {path}" for path in outcome.kept]
    emit(outcome.as_dict(), "\n".join(lines))


@profile.command()
@click.argument("name", metavar="NAME")
@click.option("--force", is_flag=True,
              help="Override an active session and plugin vetoes (recorded in the audit "
              "log; never orders in flight).")
@yes_option
@common
@handle_errors
def switch(name: str, force: bool, yes: bool) -> None:
    """Make NAME the active profile: guarded, after a pre-switch backup.

    Asks first (--yes for scripts). Exit 3 with every reason when vetoed (orders in
    flight, an active session where the current profile's strictness forbids it).
    """
    store = _store()
    store.get(name)  # a bad or unknown name is refused before anyone is asked
    active = store.active_name()
    if active != name:  # switching to the active profile changes nothing: nothing to ask
        confirm(f"Switch the active profile from {active or '(none)'} to {name}?", yes)
    with LazyBar("backing up", enabled=progress_shown()) as bar:
        outcome = store.switch(name, db_url=db_url(), force=force, progress=bar)
    lines = [f"switched {outcome.previous or '(none)'} -> {outcome.active}; database "
             f"{outcome.database}" if outcome.changed else f"profile {name} is already active"]
    if outcome.backup_id:
        lines.append(f"  pre-switch backup {outcome.backup_id} of {outcome.previous_database}")
    lines += [f"  ! {w}" for w in outcome.warnings if outcome.changed]
    emit(outcome.as_dict(), "\n".join(lines))
