"""A restore or rollback decided before anyone is asked to confirm it: which backup,
from which catalog (this database's, or with *from_profile* another profile's), what it
would change, and the vetoes an operator should hear before the question, not after.

::

    plan = plan_restore(guard, "20261129T052617154Z-manual",
                        profiles=ProfileFile.locate(config_path))
    print(plan.changes.render())
    plan.refuse_dropping()            # VetoedError when open positions would go
    outcome = carry_out(guard, plan)  # the restore itself, under the lease

The restore checks everything again under the lease: the plan only says early what
would be refused later, and reads another profile's catalog without a second Guard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dbguard_plugin.catalog import BackupNotFound, Catalog
from dbguard_plugin.catalog.manifest import Manifest
from dbguard_plugin.core.backups import catalog_for
from dbguard_plugin.core.guard import Guard
from dbguard_plugin.engines.backup import Progress
from dbguard_plugin.engines.preview import Preview
from dbguard_plugin.errors import ConfigError, DbGuardError, VetoedError
from dbguard_plugin.events import Operation
from dbguard_plugin.location import adopt_legacy_state_dir, locate
from dbguard_plugin.operations import restore
from dbguard_plugin.operations.profile_store import copy_backup
from dbguard_plugin.operations.replacement import Outcome, RestoreError, last_replacement
from dbguard_plugin.settings.config import Config, apply_profile
from dbguard_plugin.settings.profile_file import ProfileFile
from dbguard_plugin.settings.profiles import Profile
from dbguard_plugin.verdict import Verdict


@dataclass(frozen=True)
class RestorePlan:
    """A restore by id: the backup (in this database's catalog by now) and what writing
    it would change."""

    manifest: Manifest
    changes: Preview
    #: The profile the backup was brought from, and that profile's environment.
    from_profile: str | None = None
    from_environment: str = ""

    def refuse_dropping(self) -> None:
        """VetoedError when the restore would drop open positions (--force allows it)."""
        if self.changes.drops_open_positions:
            verdict = Verdict(Operation.RESTORE, restore.drop_reasons(self.changes))
            raise VetoedError(verdict, f"restoring {self.manifest.id} would drop open "
                              "positions; nothing was changed. Use --force to restore anyway")


def plan_restore(guard: Guard, backup_id: str, *, profiles: ProfileFile,
                 db_url: str | None = None, from_profile: str | None = None,
                 force: bool = False, rows_lost: bool = True) -> RestorePlan:
    """Find *backup_id* and preview it. With *from_profile* the backup comes from that
    profile's catalog, copied (verified) into *guard*'s; a development or testing backup
    into a production profile is vetoed unless *force*. Without it, a backup that only
    another profile's catalog holds is refused with the option that takes it.

    *profiles* is the profiles file, *db_url* the database given for a profile that
    names none (--db); *rows_lost* counts the rows the restore would lose (a scan).
    """
    guard.refuse_unguardable(Operation.RESTORE)
    if from_profile is None:
        manifest, environment = _own_backup(guard, backup_id, profiles, db_url), ""
    else:
        manifest, environment = _bring_backup(guard, backup_id, from_profile, profiles,
                                              db_url, force)
    changes = restore.preview(guard, manifest, rows_lost=rows_lost)
    return RestorePlan(manifest, changes, from_profile, environment)


def carry_out(guard: Guard, plan: RestorePlan, *, force: bool = False,
              who: str | None = None, progress: Progress | None = None) -> Outcome:
    """Restore *plan*'s backup, checked again under the lease."""
    return restore.restore(guard, plan.manifest.id, force=force, who=who, progress=progress,
                           from_profile=plan.from_profile,
                           from_environment=plan.from_environment)


def rollback_target(guard: Guard) -> dict[str, Any]:
    """The record of the replacement a rollback would undo; RestoreError when there is
    none with a safety backup."""
    last = last_replacement(guard)
    if last is None or not last.get("safety_id"):
        raise RestoreError(f"nothing to roll back for {guard.location.redacted}")
    return last


# -- which catalog holds the backup ----------------------------------------------------


def _own_backup(guard: Guard, backup_id: str, profiles: ProfileFile,
                db_url: str | None) -> Manifest:
    """*backup_id* from *guard*'s catalog; when another profile's holds it, a
    ConfigError names that profile and the options the restore needs."""
    try:
        return guard.catalog.get(backup_id)
    except BackupNotFound:
        holder = next((profile for profile, catalog in _catalogs(profiles, db_url)
                       if catalog.manifest_path(backup_id).exists()), None)
        if holder is None:
            raise
    also = " and --force" if guard.config.environment == "production" and \
        holder.environment != "production" else ""
    raise ConfigError(f"backup {backup_id} is in the catalog of profile {holder.name}, not "
                      f"of {guard.config.profile or 'this database'}; restoring it here "
                      f"needs --from-profile {holder.name}{also}") from None


def _bring_backup(guard: Guard, backup_id: str, name: str, profiles: ProfileFile,
                  db_url: str | None, force: bool) -> tuple[Manifest, str]:
    """*backup_id* of profile *name*'s catalog, copied into *guard*'s unless the restore
    would be vetoed (nothing is copied for a refusal); and that profile's environment."""
    profile, source = next(_catalogs(profiles, db_url, only=name))
    manifest = source.get(backup_id)
    manifest = dataclasses.replace(manifest, profile=manifest.profile or profile.name)
    reason = restore.profile_reason(guard, manifest, name, profile.environment)
    if reason is not None and not force:
        raise VetoedError(Verdict(Operation.RESTORE, (reason,)),
                          f"restore: vetoed\n  - {reason.message}; nothing was changed")
    return copy_backup(source, guard.catalog, manifest), profile.environment


def _catalogs(profiles: ProfileFile, db_url: str | None,
              only: str | None = None) -> Iterator[tuple[Profile, Catalog]]:
    """Each profile's backup catalog (*only*'s: an error when it has none), read from one
    reading of the profiles file; *db_url* serves a profile that names no database."""
    contents = profiles.read()
    chosen = contents.profiles if only is None else (contents.find(only) or profiles.get(only),)
    base = Config.load(profiles.config_path) if profiles.config_path is not None else Config()
    for profile in chosen:
        try:
            yield profile, _catalog(base, profile, db_url, profiles)
        except DbGuardError:
            if only is not None:
                raise
            continue  # a profile without a usable database holds no backup


def _catalog(base: Config, profile: Profile, db_url: str | None,
             profiles: ProfileFile) -> Catalog:
    """Profile *profile*'s catalog, where its Guard would keep it."""
    config = apply_profile(base, profile, None if profile.db_url else db_url,
                           profiles.path.parent)
    if not config.db_url:  # what the profile's Guard would say
        raise ConfigError(
            f"{config.source}: no database: set dbguard.db_url in the config file "
            "or give --db URL (e.g. sqlite:////path/to/tradesv3.sqlite)")
    location = locate(config.db_url, config.state_dir)
    if config.state_dir is None:
        adopt_legacy_state_dir(location)
    return catalog_for(config, location)
