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

from blinker import Namespace

_signals = Namespace()

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
)
