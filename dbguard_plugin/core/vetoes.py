"""The guard's own rules: why an operation may not run now, and forcing past them.

Orders in flight (in this process or another), an operation holding the lease, a file
with several hard links and, where the environment says so, an active session. Plugins
add theirs through ``dbguard_veto``; the guard passes their answer in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from dbguard_plugin import signals
from dbguard_plugin.catalog import Catalog, journal
from dbguard_plugin.core import audit
from dbguard_plugin.engines.lease import LeaseView
from dbguard_plugin.errors import DbGuardError, VetoedError
from dbguard_plugin.events import Operation
from dbguard_plugin.location import DatabaseLocation, hard_link_problem
from dbguard_plugin.settings.config import Config
from dbguard_plugin.state import Snapshot
from dbguard_plugin.status import HOSTNAME, HolderStatus
from dbguard_plugin.verdict import Reason, Verdict

log = logging.getLogger("dbguard_plugin.core.guard")


@dataclasses.dataclass(frozen=True)
class Standing:
    """What the rules look at: this process's tracker and the shared lease."""

    snapshot: Snapshot
    view: LeaseView
    holding_exclusive: bool
    holding_orders: bool


def plugin_objection(hook: Any, guard: object, op: Operation, state: Snapshot) -> str | None:
    """The first veto plugin's objection to *op*, or None. A plugin that raises objects
    (the safe answer: the check cannot say the operation is safe), naming what it raised;
    it is a plugin veto, so ``--force`` can override it, audited."""
    try:
        objection: str | None = hook.dbguard_veto(guard=guard, operation=op, state=state)
    except Exception as exc:  # a plugin's code may raise anything
        return (f"a veto plugin failed ({type(exc).__name__}: {exc}); fix it, or skip it "
                "with DBGUARD_BLOCK_PLUGINS=NAME")
    return objection


def judge(op: Operation, standing: Standing, location: DatabaseLocation, config: Config,
          plugin_veto: object) -> Verdict:
    """Every reason *op* may not run now, and the warnings that do not stop it."""
    reasons = lease_reasons(standing)
    damaged = damaged_journal(op, location)
    if damaged is not None:
        reasons.insert(0, Reason("journal-unreadable", damaged, False))
    linked = hard_link_problem(location)
    if linked is not None:
        # Another name of this file has its own lease: what that lease would show
        # here cannot be seen, so nothing may replace the file through any name.
        reasons.insert(0, Reason("hard-linked", linked, False))
    warnings: list[str] = []
    found = sessions(standing)
    if found:
        text = "; ".join(found)
        if op in config.vetoed_by_session:
            reasons.append(Reason(
                "session-active",
                f"a trading session is active ({text}); {op.value} needs the bot "
                f"stopped in the {config.environment} environment",
                overridable=True,
            ))
        else:
            warnings.append(f"a trading session is active ({text})")
    if plugin_veto:
        reasons.append(Reason("plugin", str(plugin_veto), overridable=True))
    return Verdict(op, tuple(reasons), tuple(warnings))


#: The operations that write the operation journal, which an unreadable one refuses.
JOURNALED = frozenset({Operation.RESTORE, Operation.MOVE})


def damaged_journal(op: Operation, location: DatabaseLocation) -> str | None:
    """Why *op* must wait for an operator: the journal here is unreadable (see
    journal.UnreadableJournal), so what it recorded cannot be overwritten; or None."""
    if op not in JOURNALED:
        return None
    try:
        journal.read(location.state_dir)
    except journal.UnreadableJournal as exc:
        return str(exc)
    return None


def announce(sender: object, verdict: Verdict) -> None:
    """Send ``operation-vetoed`` when *verdict* has reasons."""
    if verdict.reasons:
        signals.notify(signals.operation_vetoed, sender, operation=verdict.operation,
                       verdict=verdict, reasons=[r.message for r in verdict.reasons])


def lease_lost(op: Operation, verdict: Verdict) -> VetoedError:
    """The refusal when the exclusive lease could not be taken, with the reasons found."""
    if not verdict.reasons:  # the holder left between the two looks
        verdict = Verdict(op, (Reason(
            "lease-held", "another process held the lease; try again", False),))
    return VetoedError(verdict, verdict.summary())


def database_problem(location: DatabaseLocation, catalog: Catalog) -> str | None:
    """Why this database cannot be traded on safely as configured, or None: a file
    with several hard links, or no file where the catalog holds its backups."""
    problem = hard_link_problem(location)
    path = location.sqlite_path
    if problem is None and path is not None and not path.exists():
        with contextlib.suppress(DbGuardError, OSError):
            newest = catalog.manifests()
            if newest:
                problem = (
                    f"{path} does not exist, but {catalog.directory} holds "
                    f"{len(newest)} backups of it (the newest {newest[-1].id}): the "
                    "database was moved or deleted. Point the configuration (or the "
                    "active profile) at where it lives now, or restore it with "
                    f"'dbguard restore {newest[-1].id} --yes'"
                )
    return problem


def unguardable(op: Operation, location: DatabaseLocation) -> None:
    """Raise VetoedError when this name of the file has hard-linked twins."""
    linked = hard_link_problem(location)
    if linked is not None:
        verdict = Verdict(op, (Reason("hard-linked", linked, False),))
        raise VetoedError(verdict, verdict.summary())


def force_or_refuse(sender: object, verdict: Verdict, force: bool, who: str | None,
                    audit_path: Path, database: str) -> Verdict:
    """*verdict* if allowed; forced (and audited) if *force* may override it; else raise."""
    if verdict.allowed:
        return verdict
    if force and verdict.overridable:
        forced = dataclasses.replace(verdict, forced=True)
        who = who or audit.operator()
        audit.record_force(audit_path, forced, who, database)
        log.warning("dbguard: %s forced by %s over: %s", forced.operation.value, who,
                    "; ".join(r.message for r in forced.reasons))
        signals.notify(
            signals.operation_forced, sender, operation=forced.operation, verdict=forced,
            reasons=[r.message for r in forced.reasons], who=who,
        )
        return forced
    hint = "" if verdict.overridable else "\n(force cannot override these)"
    raise VetoedError(verdict, verdict.summary() + hint)


def already_running(op: Operation) -> VetoedError:
    pid = os.getpid()
    return VetoedError(Verdict(op, (Reason(
        "operation-in-progress",
        f"this process (pid {pid}) is already running an operation; finish it first",
        False, {"pid": pid}),)),
        f"{op.value}: vetoed: an operation is already running in this process")


def lease_reasons(standing: Standing) -> list[Reason]:
    """Orders in flight here or elsewhere, and operations holding the lease."""
    snapshot, view = standing.snapshot, standing.view
    reasons = _own_reasons(snapshot)
    if view.orders_free or standing.holding_exclusive:
        return reasons
    others = view.others()
    explained = [reason for reason in map(_holder_reason, others) if reason is not None]
    reasons.extend(explained)
    if not explained and not standing.holding_orders:
        bots = ", ".join(h.where() for h in others if h.role == "bot") or "unknown"
        reasons.append(Reason(
            "lease-held",
            f"the database lease is held by another process ({bots}) that has not "
            "published its orders yet; try again in a moment", False,
        ))
    return reasons


def _own_reasons(snapshot: Snapshot) -> list[Reason]:
    pid = os.getpid()
    if snapshot.orders:
        return [_orders_reason(f"pid {pid} (this process)", pid, HOSTNAME,
                               [order.describe() for order in snapshot.orders])]
    if snapshot.admissions:
        return [_placing_reason(f"pid {pid} (this process)", pid, HOSTNAME,
                                snapshot.admissions, list(snapshot.pending))]
    return []


def _holder_reason(holder: HolderStatus) -> Reason | None:
    if holder.role == "operation":
        return Reason(
            "operation-in-progress",
            f"{holder.operation} in progress by {holder.where()}; wait for it to "
            "finish", False, {"pid": holder.pid, "host": holder.host,
                              "operation": holder.operation},
        )
    if holder.orders:
        return _orders_reason(holder.where(), holder.pid, holder.host,
                              [_describe_order(order) for order in holder.orders])
    if isinstance(count := holder.data.get("admissions"), int) and count > 0:
        pending = holder.data.get("pending")
        return _placing_reason(holder.where(), holder.pid, holder.host, count,
                               pending if isinstance(pending, list) else [])
    return None


def sessions(standing: Standing) -> list[str]:
    """The active sessions, here and in other processes, in words."""
    snapshot, view = standing.snapshot, standing.view
    found = []
    if snapshot.session is not None:
        found.append(f"session {snapshot.session.session_id} in pid {os.getpid()} "
                     "(this process)")
    if not view.session_free:
        for holder in view.others():
            if holder.session:
                found.append(f"session {holder.session.get('session_id')} in "
                             f"{holder.where()}")
        if len(found) == (1 if snapshot.session is not None else 0) and (
            snapshot.session is None
        ):
            found.append("a session in a process that has not published its status")
    return found


def _describe_order(order: dict[str, Any]) -> str:
    what = " ".join(str(order.get(k) or "") for k in ("symbol", "side")).strip()
    oid = str(order.get("order_id"))
    return f"{oid} ({what}, {order.get('state')})" if what else oid


def _placing_reason(where: str, pid: int, host: str, count: int,
                    pending: list[str]) -> Reason:
    """An admitted order the host has not submitted yet (no id): named by pair and side."""
    what = f": {', '.join(str(p) for p in pending)}" if pending else ""
    noun = "an order" if count == 1 else f"{count} orders"
    return Reason("orders-in-flight", f"{where} is about to place {noun}{what}", False,
                  {"pid": pid, "host": host, "placing": pending})


def _orders_reason(where: str, pid: int, host: str, orders: list[str]) -> Reason:
    noun = "order" if len(orders) == 1 else "orders"
    return Reason(
        "orders-in-flight",
        f"{len(orders)} {noun} in flight in {where}: {', '.join(orders)}",
        False,
        {"pid": pid, "host": host, "orders": orders},
    )


def holder_dict(holder: HolderStatus) -> dict[str, Any]:
    return {
        "role": holder.role,
        "pid": holder.pid,
        "host": holder.host,
        "orders_in_flight": holder.orders,
        "session": holder.session,
        "operation": holder.operation,
    }
