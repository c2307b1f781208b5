"""``dbguard backup``, ``backups``, ``verify`` and ``prune``: the backup catalog."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from dbguard_plugin.cli.database import open_guard
from dbguard_plugin.cli.options import (
    EXIT_VERIFY,
    common,
    confirm,
    emit,
    handle_errors,
    options,
    progress_shown,
    size,
    yes_option,
)
from dbguard_plugin.engines.preview import printable
from dbguard_plugin.errors import ConfigError, VerificationError
from dbguard_plugin.progress import LazyBar

if TYPE_CHECKING:
    from dbguard_plugin.catalog import Damaged
    from dbguard_plugin.catalog.manifest import Manifest
    from dbguard_plugin.core.guard import Guard


@click.command()
@click.option("--reason", metavar="TEXT", default="manual", show_default=True,
              help="Why: one of manual, scheduled, pre-restore, ... or free text (kept as "
              "a note of a manual backup).")
@common
@handle_errors
def backup(reason: str) -> None:
    """Take a verified hot backup of the live database now."""
    # why here: the catalog is costly, as the guard is (see cli.database)
    from dbguard_plugin.catalog.manifest import REASONS

    guard = open_guard()
    kind, note = (reason, "") if reason in REASONS else ("manual", reason)
    with LazyBar("backing up", enabled=progress_shown()) as bar:
        manifest = guard.backup(kind, note=note, progress=bar)
    path = guard.catalog.location_of(manifest)
    emit(
        {**manifest.as_dict(), "path": str(path)},
        f"backup {manifest.id} verified: {size(manifest.size)}, "
        f"{sum(manifest.tables.values()):,} rows in {len(manifest.tables)} tables, "
        f"{manifest.duration_s:.2f} s\n  {path}\n  sha256 {manifest.sha256}",
    )


@click.command()
@common
@handle_errors
def backups() -> None:
    """List the backups in the catalog, oldest first."""
    guard = open_guard()
    rows = [_row(guard, m) for m in guard.catalog.manifests()]
    damaged = guard.catalog.damaged()
    if options().json:
        emit(rows + [damaged_row(d) for d in damaged], "")
        return
    if not rows and not damaged:
        click.echo(f"no backups in {guard.catalog.directory}; 'dbguard backup' makes one")
        return
    # ADDED (what each backup added to the repository) only where one is there: a
    # catalog of data files reads as it always has
    added = any(r["storage"] == "repository" for r in rows)
    click.echo(f"{'ID':<38} {'TIME (UTC)':<24} {'REASON':<14} {'SIZE':>10} "
               + (f"{'ADDED':>10} " if added else "") + "VERIFIED SHA256")
    for r in rows:
        click.echo(
            f"{r['id']:<38} {r['time']:<24} {r['reason']:<14} {size(int(r['size'])):>10} "
            + (f"{size(int(r['added'])):>10} " if added else "")
            + f"{'yes' if r['verified'] else 'NO':<8} {str(r['sha256'])[:12]}"
        )
        if r["note"]:  # free text of any length: on its own line, under its backup
            click.echo(f"  note: {printable(r['note'])}")
    for d in damaged:
        click.echo(d.line())
    click.echo(f"{len(rows)} backups in {guard.catalog.directory}"
               + (f"; {len(damaged)} damaged manifests, never used" if damaged else ""))


def _row(guard: Guard, m: Manifest) -> dict[str, Any]:
    """A backup as a row of 'dbguard backups --json'."""
    return {
        "id": m.id, "time": m.created, "reason": m.reason, "size": m.size,
        "sha256": m.sha256, "verified": m.verified,
        "path": str(guard.catalog.directory / m.file if m.file
                    else guard.catalog.location_of(m)),
        "note": m.note, "storage": m.storage,
        # what this backup added to the repository; a data file is all its own
        "added": m.added if m.storage == "repository" else m.size,
    }


def damaged_row(damaged: Damaged) -> dict[str, Any]:
    """A damaged manifest as a row of 'dbguard backups --json': its file's id, and why in
    "damaged" (a sound backup's row has no such key)."""
    return {"id": damaged.file.removesuffix(".json"), "time": None, "reason": None,
            "size": None, "sha256": None, "verified": False, "path": damaged.path,
            "note": "", "damaged": damaged.why}


@click.command()
@click.argument("backup_id", metavar="[ID]", required=False)
@click.option("--all", "check_all", is_flag=True, help="Verify every backup.")
@click.option("--level", type=click.Choice(["quick_check", "integrity_check"]),
              default="integrity_check", show_default=True, help="SQLite check to run.")
@common
@handle_errors
def verify(backup_id: str | None, check_all: bool, level: str) -> None:
    """Recompute sha256 and run integrity_check on ID (or --all). Exit 4 on any problem."""
    # why here: the engines are costly, as the guard is (see cli.database)
    from dbguard_plugin.catalog.repository import shared_checks
    from dbguard_plugin.engines import verify_backup

    if bool(backup_id) == check_all:
        raise ConfigError("give one backup ID or --all ('dbguard backups' lists the ids)")
    guard = open_guard()
    manifests = guard.catalog.manifests() if check_all else [_to_verify(guard, backup_id or "")]
    damaged = guard.catalog.damaged() if check_all else []
    results = []
    with LazyBar("verifying", enabled=progress_shown()) as bar, shared_checks() as chunks:
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
    if chunks.read:
        lines.append(f"repository: {chunks.read} chunks read, {chunks.hashed} rehashed "
                     "(a chunk several backups share is hashed once)")
    lines.append(f"{len(results) - len(bad)} ok, {len(bad)} bad"
                 + (f", {len(damaged)} damaged manifests" if damaged else ""))
    emit({"results": [r.as_dict() for r in results],
          "damaged": [d.as_dict() for d in damaged], "ok": not bad and not damaged,
          "chunks": {"read": chunks.read, "hashed": chunks.hashed}},
         "\n".join(lines))
    if bad or damaged:
        sys.exit(EXIT_VERIFY)


def _to_verify(guard: Guard, backup_id: str) -> Manifest:
    """The manifest of *backup_id*; an id the catalog lacks fails verification (exit 4):
    a cron job verifying a backup it expects must hear that it is gone."""
    # why here: the catalog is costly, as the guard is (see cli.database)
    from dbguard_plugin.catalog import BackupNotFound

    try:
        return guard.catalog.get(backup_id)
    except BackupNotFound as exc:
        raise VerificationError(f"verification failed: no such backup: {exc}") from None


@click.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@yes_option
@common
@handle_errors
def prune(dry_run: bool, yes: bool) -> None:
    """Delete backups the retention policy (keep_last, keep_daily, keep_weekly, ...) drops.

    Then collect the repository's chunks no backup references any more. It never asks:
    it deletes only what the configured policy drops (cron runs it); --yes is accepted
    as on every command that deletes."""
    del yes  # the same flag as every command that deletes; prune has nothing to ask
    guard = open_guard()
    removed = guard.prune(dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit(
        {"dry_run": dry_run, "removed": [m.id for m in removed]},
        "\n".join([f"{verb} {m.id}" for m in removed] + [f"{verb} {len(removed)} backups"]),
    )


@click.command()
@yes_option
@common
@handle_errors
def convert(yes: bool) -> None:
    """Move the catalog's full-copy SQLite backups into its deduplicated repository.

    Each is verified first; its manifest keeps its id, time and reason."""
    # why here: the engines are costly, as the guard is (see cli.database)
    from dbguard_plugin.operations.convert import convert as into_repository
    from dbguard_plugin.operations.convert import convertible

    guard = open_guard()
    todo = convertible(guard.catalog)
    if not todo:
        emit({"converted": [], "added": 0, "freed": 0},
             f"nothing to convert in {guard.catalog.directory}")
        return
    confirm(f"convert {len(todo)} backups ({size(sum(m.size for m in todo))}) in "
            f"{guard.catalog.directory} into its repository?", yes)
    with LazyBar("converting", enabled=progress_shown()) as bar:
        done = into_repository(guard.catalog, guard.config.compression, bar)
    added, freed = sum(c.added for c in done), sum(c.file_size for c in done)
    emit({"converted": [c.as_dict() for c in done], "added": added, "freed": freed},
         "\n".join([f"converted {c.id}: {size(c.file_size)} file, "
                    f"{size(c.added)} added" for c in done]
                   + [f"converted {len(done)} backups: {size(freed)} of files became "
                      f"{size(added)} in the repository"]))
