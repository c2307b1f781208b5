"""The lease's locks on the server: PostgreSQL advisory locks, MariaDB named locks.

Both live on ONE pinned connection and die with it: a bot killed by SIGKILL closes its
socket, the server ends the session and every lock it held is gone. Neither touches a
row of the bot's tables.

PostgreSQL has shared and exclusive advisory locks: bots hold the orders key shared,
an operation takes it exclusive, exactly like the SQLite file lease.

MariaDB's ``GET_LOCK`` is exclusive only, so sharing is built from it: every bot with
orders in flight holds one of ``SLOTS`` slot locks of its own, and an operation holds
the operator lock. Each side takes its own lock first and then looks for the other's
(``IS_USED_LOCK``): of a bot and an operator racing, at least one sees the other and
backs off, so they never both proceed. ``IS_USED_LOCK`` also names the holder's
connection id, which the status table explains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

#: PostgreSQL advisory key space (two int4 keys): 'dbgu' and the lock's number.
PG_CLASS = 0x64626775
PG_ORDERS, PG_SESSION = 1, 2
#: MariaDB: how many bots can hold orders (or a session) at once on one database.
SLOTS = 64


@dataclass(frozen=True)
class Holders:
    """Connection ids holding each lock (this connection's included)."""

    orders: frozenset[int] = field(default_factory=frozenset)
    session: frozenset[int] = field(default_factory=frozenset)
    exclusive: int | None = None


class LockScheme(Protocol):
    conn_id: int

    def try_orders(self) -> bool: ...
    def release_orders(self) -> None: ...
    def try_session(self) -> bool: ...
    def release_session(self) -> None: ...
    def try_exclusive(self) -> bool: ...
    def release_exclusive(self) -> None: ...
    def holders(self) -> Holders: ...


def _one(conn: Any, sql: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return None if row is None else row[0]


class PgLocks:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.conn_id = int(_one(conn, "SELECT pg_backend_pid()"))

    def _call(self, function: str, number: int) -> bool:
        return bool(_one(self.conn, f"SELECT {function}({PG_CLASS}, {number})"))

    def try_orders(self) -> bool:
        return self._call("pg_try_advisory_lock_shared", PG_ORDERS)

    def release_orders(self) -> None:
        self._call("pg_advisory_unlock_shared", PG_ORDERS)

    def try_session(self) -> bool:
        return self._call("pg_try_advisory_lock_shared", PG_SESSION)

    def release_session(self) -> None:
        self._call("pg_advisory_unlock_shared", PG_SESSION)

    def try_exclusive(self) -> bool:
        return self._call("pg_try_advisory_lock", PG_ORDERS)

    def release_exclusive(self) -> None:
        self._call("pg_advisory_unlock", PG_ORDERS)

    def wait_exclusive(self) -> None:
        """Queue for the orders lock exclusive and wait, however long, until it is ours.

        Only used right behind a restore transaction the lock was lent to: PostgreSQL
        grants it to this connection the moment that transaction ends, before any bot's
        try-lock can get in (a new request never jumps a conflicting waiter).
        """
        with self.conn.transaction():  # session-level: the lock outlives this transaction
            self.conn.execute("SET LOCAL lock_timeout = 0")
            self.conn.execute("SET LOCAL statement_timeout = 0")
            self.conn.execute(f"SELECT pg_advisory_lock({PG_CLASS}, {PG_ORDERS})")

    def holders(self) -> Holders:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT objid::int, mode, pid FROM pg_locks WHERE locktype = 'advisory' "
                f"AND granted AND classid = {PG_CLASS} AND objsubid = 2 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            rows = cur.fetchall()
        return Holders(
            orders=frozenset(int(p) for o, m, p in rows if o == PG_ORDERS),
            session=frozenset(int(p) for o, m, p in rows if o == PG_SESSION),
            exclusive=next((int(p) for o, m, p in rows
                            if o == PG_ORDERS and m == "ExclusiveLock"), None),
        )


class MariaLocks:
    def __init__(self, conn: Any, database: str) -> None:
        self.conn = conn
        self.conn_id = int(_one(conn, "SELECT CONNECTION_ID()"))
        # GET_LOCK names are server-wide: the database's hash keeps databases apart
        prefix = "dbguard:" + hashlib.sha256(database.encode()).hexdigest()[:16]
        self.operator = f"{prefix}:op"
        self.order_slots = [f"{prefix}:o:{n}" for n in range(SLOTS)]
        self.session_slots = [f"{prefix}:s:{n}" for n in range(SLOTS)]
        self._order_slot: str | None = None
        self._session_slot: str | None = None

    def _used(self, names: list[str]) -> list[int | None]:
        sql = "SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names))
        with self.conn.cursor() as cur:
            cur.execute(sql, names)
            row = cur.fetchone()
        return [None if v is None else int(v) for v in row]

    def _take_slot(self, slots: list[str]) -> str | None:
        for name, user in zip(slots, self._used(slots), strict=True):
            if user is None and _one(self.conn, "SELECT GET_LOCK(%s, 0)", (name,)) == 1:
                return name
        return None

    def _release(self, name: str | None) -> None:
        if name is not None:
            _one(self.conn, "SELECT RELEASE_LOCK(%s)", (name,))

    def try_orders(self) -> bool:
        slot = self._take_slot(self.order_slots)
        if slot is None:
            return False
        if self._used([self.operator])[0] is not None:  # an operation came first
            self._release(slot)
            return False
        self._order_slot = slot
        return True

    def release_orders(self) -> None:
        self._release(self._order_slot)
        self._order_slot = None

    def try_session(self) -> bool:
        self._session_slot = self._take_slot(self.session_slots)
        return self._session_slot is not None

    def release_session(self) -> None:
        self._release(self._session_slot)
        self._session_slot = None

    def try_exclusive(self) -> bool:
        if _one(self.conn, "SELECT GET_LOCK(%s, 0)", (self.operator,)) != 1:
            return False
        if any(user is not None for user in self._used(self.order_slots)):
            self._release(self.operator)  # a bot has orders in flight
            return False
        return True

    def release_exclusive(self) -> None:
        self._release(self.operator)

    def holders(self) -> Holders:
        used = self._used([self.operator, *self.order_slots, *self.session_slots])
        orders = used[1:SLOTS + 1]
        session = used[SLOTS + 1:]
        return Holders(
            orders=frozenset(u for u in orders if u is not None)
            | ({used[0]} if used[0] is not None else set()),
            session=frozenset(u for u in session if u is not None),
            exclusive=used[0],
        )
