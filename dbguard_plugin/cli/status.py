"""``dbguard status``, ``check`` and ``doctor``: what the guard sees, would allow, and
finds wrong; none of them changes anything."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from dbguard_plugin.cli.database import open_guard
from dbguard_plugin.cli.options import EXIT_FAILURE, EXIT_VETOED, common, emit, handle_errors
from dbguard_plugin.errors import ConfigError
from dbguard_plugin.events import Operation

if TYPE_CHECKING:
    from dbguard_plugin.core.guard import Guard


@click.command()
@common
@handle_errors
def status() -> None:
    """Show the lease, who holds it and why, and this configuration."""
    guard = open_guard()
    data = {**guard.status(), "profile": guard.config.profile or None,
            "recovery": _pending(guard)}
    emit(data, render_status(data))


def _pending(guard: Guard) -> dict[str, Any] | None:
    """An interrupted operation awaiting the operator (``undecided``), or a damaged
    journal (``unreadable``), for scripts and monitors; None when nothing is pending."""
    # why here: loaded already by open_guard; named here, not at the top, for --help
    from dbguard_plugin.catalog import journal
    from dbguard_plugin.operations import recovery

    try:
        pending = recovery.undecided(guard)
    except journal.UnreadableJournal as exc:
        return {"unreadable": str(exc)}
    return None if pending is None else {"undecided": pending.as_dict()}


@click.command()
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


@click.command()
@common
@handle_errors
def doctor() -> None:
    """Check journal mode, busy timeout, free space, permissions and backup age."""
    # why here: costly, as the guard is (see cli.database)
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


def render_status(data: dict[str, Any]) -> str:
    """``dbguard status`` for a person: the database, the lease and its holders."""
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
    lines += [_holder_line(holder) for holder in lease["holders"]]
    lines.append(f"plugins:     {', '.join(data['plugins'])}")
    lines += [f"  ! {warning}" for warning in data.get("warnings", ())]
    return "\n".join(lines)


def _holder_line(holder: dict[str, Any]) -> str:
    if holder["role"] == "operation":
        return f"  pid {holder['pid']} on {holder['host']}: {holder['operation']}"
    orders = ", ".join(str(o.get("order_id")) for o in holder["orders_in_flight"]) or "none"
    session = (holder["session"] or {}).get("session_id", "none")
    return (f"  bot pid {holder['pid']} on {holder['host']}: session {session}, "
            f"orders in flight: {orders}")
