"""Signals: what happened, for a UI, metrics or an audit trail. They never decide anything.

Every signal is sent with the :class:`~dbguard_plugin.Guard` as sender and keyword
arguments only; receivers must accept ``**extra`` so new arguments never break them::

    from dbguard_plugin import signals

    @signals.operation_vetoed.connect
    def on_vetoed(guard, operation, reasons, **extra):
        print(f"{operation} refused: {reasons}")

blinker keeps weak references to receivers by default: keep a reference to a bound
method, or connect with ``weak=False``.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace, Signal

log = logging.getLogger(__name__)

_signals = Namespace()


def notify(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send *signal* to every receiver; a receiver that raises is logged and skipped.

    A receiver must never change what dbguard does: a UI that fails to redraw cannot be
    allowed to fail a backup or to pause trading.
    """
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("dbguard: a receiver of %s raised; ignored",
                          getattr(signal, "name", signal))

#: A trading session started. Arguments: ``session`` (SessionInfo).
session_started = _signals.signal("session-started")

#: A trading session ended. Arguments: ``session`` (SessionInfo).
session_ended = _signals.signal("session-ended")

#: An order changed state in the tracker. Arguments: ``event`` (OrderEvent), ``before``
#: and ``after`` (OrderKind or None), ``in_flight`` (int), ``anomaly`` (str or None).
order_state_changed = _signals.signal("order-state-changed")

#: The guard refused an operation. Arguments: ``operation`` (Operation),
#: ``verdict`` (Verdict), ``reasons`` (list of str).
operation_vetoed = _signals.signal("operation-vetoed")

#: An operator overrode vetoes with ``force``. Arguments: ``operation``, ``verdict``,
#: ``reasons`` (the overridden ones), ``who`` (str).
operation_forced = _signals.signal("operation-forced")

#: A new order was refused because an operation holds the lease. Arguments:
#: ``holder`` (str or None: what holds it).
maintenance_refused = _signals.signal("maintenance-refused")

#: A backup is starting. Arguments: ``reason`` (session-start, manual, ...),
#: ``backup_dir`` (Path).
backup_started = _signals.signal("backup-started")

#: A backup was made and verified. Arguments: ``manifest`` (Manifest), ``path`` (Path).
backup_finished = _signals.signal("backup-finished")

#: A backup failed; nothing was added to the catalog. Arguments: ``reason`` (str),
#: ``error`` (str: what went wrong and what to do).
backup_failed = _signals.signal("backup-failed")

#: A restore or rollback is about to write into the live database (its safety backup is
#: taken). Arguments: ``backup_id`` (str), ``operation`` ("restore" or "rollback").
restore_started = _signals.signal("restore-started")

#: The live database now holds a backup's content, checked. A UI must reload everything
#: it shows. Arguments: ``operation`` ("restore", "rollback" or "recovery"),
#: ``backup_id`` (str), ``safety_id`` (str: the backup that undoes it, "" if none).
database_replaced = _signals.signal("database-replaced")

#: A restore failed. Arguments: ``backup_id``, ``error`` (str), ``rolled_back`` (bool:
#: the safety backup was put back, so the database is as it was).
restore_failed = _signals.signal("restore-failed")

#: A rollback put the last replacement's safety backup back. Arguments: ``backup_id``.
rolled_back = _signals.signal("rolled-back")

#: The database moved. Arguments: ``old_path`` and ``new_path`` (Path), ``new_url`` (str,
#: without password), ``deleted_old`` (bool).
moved = _signals.signal("moved")

#: The active environment profile changed (after its pre-switch backup). A UI reloads
#: what it shows from the new profile. Arguments: ``previous`` (str or None), ``profile``
#: (str: now active), ``backup_id`` (str: the pre-switch backup, "" if none),
#: ``database`` (str: the new profile's database, without password).
profile_switched = _signals.signal("profile-switched")

#: New orders are paused: ``admit_order()`` answers False until the cause is gone.
#: Arguments: ``why`` (str: the cause and the fix), ``database`` (str, without password).
orders_paused = _signals.signal("orders-paused")

#: Recovery found an interrupted restore, rollback or move whose database it cannot
#: prove to be the state before or the state after (a bot or a migration wrote to it,
#: or it cannot be read), and changed nothing; sent whenever recovery runs (every command,
#: every session start) until an operator chooses. Arguments: ``operation`` (str),
#: ``backup_id`` and ``safety_id`` (str, "" for a move), ``found`` (str: what recovery
#: found), ``commands`` (list of str: the operator's choices), ``database`` (str, without
#: password).
recovery_undecided = _signals.signal("recovery-undecided")

#: A call from the host met a fault of the disk or of data (a full disk, a read-only
#: directory, an I/O error, a file with bad content) and did not raise: dbguard did what
#: its fail-safe rule says instead. Arguments: ``call`` (str: the Guard method, e.g.
#: "admit_order"), ``error`` (str: the exception's type and message), ``outcome`` (str:
#: what dbguard did instead, e.g. "the new order was refused").
host_fault = _signals.signal("host-fault")

ALL = (
    session_started,
    session_ended,
    order_state_changed,
    operation_vetoed,
    operation_forced,
    maintenance_refused,
    backup_started,
    backup_finished,
    backup_failed,
    restore_started,
    database_replaced,
    restore_failed,
    rolled_back,
    moved,
    profile_switched,
    recovery_undecided,
    orders_paused,
    host_fault,
)
