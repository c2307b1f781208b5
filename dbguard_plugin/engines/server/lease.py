"""The lease of a server database: the same two sides as the SQLite file lease.

A bot holds the orders lock shared while it has orders in flight and the session lock
shared while a session runs; an operation takes the orders lock exclusive. The locks
are the server's own (see :mod:`dbguard_plugin.engines.server.locks`), held on one pinned
connection per guard, so they work between hosts and end with the holder's session.
Status goes to the server's ``dbguard_holders`` table instead of local files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dbguard_plugin.engines.lease import _PROBE_GRACE, Lease, LeaseView
from dbguard_plugin.engines.server.credentials import scrub
from dbguard_plugin.engines.server.dialects import dialect_for_params
from dbguard_plugin.engines.server.holders import HoldersTable
from dbguard_plugin.engines.server.locks import LockScheme, MariaLocks, PgLocks
from dbguard_plugin.engines.server.params import POSTGRESQL, params_for
from dbguard_plugin.errors import DbGuardError
from dbguard_plugin.files import private_dir
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.status import HolderStatus, StatusPublisher

log = logging.getLogger(__name__)


class ServerLease(Lease):
    """The lease of one PostgreSQL or MariaDB database, on that server."""

    def __init__(self, location: DatabaseLocation) -> None:
        super().__init__(location.state_dir)
        self.params = params_for(location)
        self._mutex = threading.RLock()
        self._conn: Any = None
        self._locks: LockScheme | None = None
        self._table = HoldersTable(self.params.kind)
        self._orders_held = self._session_held = self._exclusive_held = False

    def prepare(self) -> None:
        if not self._prepared:
            private_dir(self.state_dir)  # the catalog, audit log and journal stay local
            self._prepared = True

    # -- the pinned connection ----------------------------------------------------------

    @contextlib.contextmanager
    def _server(self) -> Iterator[LockScheme]:
        with self._mutex:
            try:
                if self._locks is None:
                    self._connect()
                assert self._locks is not None
                yield self._locks
            except DbGuardError:
                raise
            except Exception as exc:
                # The connection is gone, and every lock it held went with it.
                self._drop_connection()
                raise DbGuardError(f"{self.params.redacted}: the lease connection failed "
                                   f"({scrub(str(exc), self.params)}); its locks are "
                                   "released") from None

    def _connect(self) -> None:
        conn = dialect_for_params(self.params).connect()
        if self.params.kind == POSTGRESQL:
            self._locks = PgLocks(conn)
        else:
            self._locks = MariaLocks(conn, self.params.database)
        self._conn = conn

    def _drop_connection(self) -> None:
        conn, self._conn, self._locks = self._conn, None, None
        self._orders_held = self._session_held = self._exclusive_held = False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _retry(self, attempt: Callable[[LockScheme], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            with self._server() as locks:
                if attempt(locks):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- bot side ----------------------------------------------------------------------

    @property
    def holding_orders(self) -> bool:
        return self._orders_held

    def hold_orders(self, timeout: float = 0.0) -> bool:
        if self._orders_held:
            return True
        if self._exclusive_held:  # like the file lease: an operation excludes its own bot
            return False
        self._orders_held = self._retry(lambda locks: locks.try_orders(),
                                        max(timeout, _PROBE_GRACE))
        return self._orders_held

    def release_orders(self) -> None:
        if self._orders_held:
            with contextlib.suppress(DbGuardError), self._server() as locks:
                locks.release_orders()
            self._orders_held = False

    def hold_session(self) -> bool:
        if not self._session_held:
            self._session_held = self._retry(lambda locks: locks.try_session(),
                                             _PROBE_GRACE)
        return self._session_held

    def release_session(self) -> None:
        if self._session_held:
            with contextlib.suppress(DbGuardError), self._server() as locks:
                locks.release_session()
            self._session_held = False

    # -- operation side ----------------------------------------------------------------

    @property
    def holding_exclusive(self) -> bool:
        return self._exclusive_held

    def take_exclusive(self, timeout: float = 0.0) -> bool:
        self.prepare()
        if self._exclusive_held:
            return True
        if self._orders_held:
            return False
        self._exclusive_held = self._retry(lambda locks: locks.try_exclusive(), timeout)
        if self._exclusive_held:
            with contextlib.suppress(Exception), self._server() as locks:
                held = locks.holders()
                self._table.remove_others(self._conn, held.orders | held.session)
        return self._exclusive_held

    def release_exclusive(self) -> None:
        if self._exclusive_held:
            with contextlib.suppress(DbGuardError), self._server() as locks:
                locks.release_exclusive()
            self._exclusive_held = False

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Any]:
        """The lease's own connection, for statements that must live and die with the
        lease: a statement running on it ends before the server releases its locks."""
        with self._server():
            yield self._conn

    def lend(self) -> Callable[[float], bool]:
        """PostgreSQL: hand the exclusive orders lock to the restore transaction queued
        for it, and queue again right behind that transaction.

        The caller must have seen the transaction waiting for the lock: the lock then
        goes straight to it, and comes straight back when it commits or aborts, so no
        bot is admitted in between. Returns ``take_back(timeout)``: True once the lock
        is ours again; False when it was not within *timeout* after the caller saw the
        transaction end (the lease is then lost, and the caller must say so).
        """
        with self._server() as locks:
            if not (self._exclusive_held and isinstance(locks, PgLocks)):
                raise DbGuardError("only a PostgreSQL lease held exclusive can be lent")
            locks.release_exclusive()
            conn = self._conn
        back = threading.Event()
        held: list[bool] = []

        def wait() -> None:
            try:
                with self._server() as again:
                    assert isinstance(again, PgLocks)
                    again.wait_exclusive()
                held.append(True)
            except DbGuardError:  # cancelled, or the connection failed: its locks are gone
                held.append(False)
            finally:
                back.set()

        threading.Thread(target=wait, name="dbguard-lease-back", daemon=True).start()

        def take_back(timeout: float) -> bool:
            if not back.wait(timeout):
                with contextlib.suppress(Exception):
                    conn.cancel()
                back.wait()
            self._exclusive_held = bool(held and held[0])
            return self._exclusive_held

        return take_back

    # -- anyone --------------------------------------------------------------------------

    def probe(self) -> LeaseView:
        with self._server() as locks:
            held = locks.holders()
            ids = set(held.orders | held.session)
            try:
                rows = self._table.read(self._conn, ids)
            except Exception as exc:  # the table only explains: a lease without it works
                log.debug("dbguard: reading %s failed: %s", self.params.redacted, exc)
                rows = []
        holders = []
        for conn_id, data in rows:
            try:
                holders.append(HolderStatus(
                    Path(f"{self.params.redacted}#{conn_id}"), str(data["role"]),
                    int(data["pid"]), str(data["host"]), data))
            except (KeyError, TypeError, ValueError):
                continue
        orders_free = not held.orders and held.exclusive is None
        return LeaseView(orders_free, not held.session, holders)

    def publisher(self, role: str, render: Callable[[], dict[str, Any]]) -> StatusPublisher:
        return ServerStatusPublisher(self, role, render)

    def publish(self, role: str, status: dict[str, Any]) -> None:
        with self._server() as locks:
            self._table.publish(self._conn, locks.conn_id, role, status)

    def withdraw(self, role: str) -> None:
        if self._conn is None:
            return  # never connected: nothing was published
        with self._server() as locks:
            self._table.withdraw(self._conn, locks.conn_id, role)

    def close(self) -> None:
        self.release_orders()
        self.release_session()
        self.release_exclusive()
        with self._mutex:
            self._drop_connection()


class ServerStatusPublisher(StatusPublisher):
    """A status publisher that writes to the server's holders table, never to files."""

    def __init__(self, lease: ServerLease, role: str,
                 render: Callable[[], dict[str, Any]]) -> None:
        super().__init__(Path(os.devnull), render)
        self._lease = lease
        self._role = role
        self._published = False

    def withdraw(self) -> None:
        with self._lock:
            self._wake.clear()
            if self._published:
                self._published = False
                with contextlib.suppress(Exception):
                    self._lease.withdraw(self._role)

    def _write(self) -> None:
        try:
            self._lease.publish(self._role, self._render())
            self._published = True
        except Exception as exc:  # status explains; it must never stop a bot
            log.warning("dbguard: publishing the lease status failed: %s", exc)

    def _still_published(self) -> bool:
        return self._published
