"""The status table on the server: who holds the lease, and why.

Processes on other hosts cannot write this host's files, so a server lease explains
itself in a small table, ``dbguard_holders``, in the guarded database. A row only
explains a lock: readers believe it only while its connection still holds one of the
lease's locks, and an operation removes the rows of connections that hold none. The
table is never dumped or restored. A user without CREATE privilege gets a working lease
whose holders are reported as "not published".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from dbguard_plugin.engines.server.params import POSTGRESQL

log = logging.getLogger(__name__)

#: dbguard's own table on the server (who holds the lease, and why). Never dumped,
#: restored, counted or fingerprinted: it describes the server now, not the data.
HOLDERS_TABLE = "dbguard_holders"

_CREATE = {
    "postgresql": f"""CREATE TABLE IF NOT EXISTS {HOLDERS_TABLE} (
        conn_id bigint NOT NULL, role varchar(32) NOT NULL, pid bigint NOT NULL,
        host varchar(255) NOT NULL, data text NOT NULL, updated double precision NOT NULL,
        PRIMARY KEY (conn_id, role))""",
    "mariadb": f"""CREATE TABLE IF NOT EXISTS {HOLDERS_TABLE} (
        conn_id BIGINT NOT NULL, role VARCHAR(32) NOT NULL, pid BIGINT NOT NULL,
        host VARCHAR(255) NOT NULL, data LONGTEXT NOT NULL, updated DOUBLE NOT NULL,
        PRIMARY KEY (conn_id, role)) ENGINE=InnoDB""",
}
_UPSERT = {
    "postgresql": f"""INSERT INTO {HOLDERS_TABLE} (conn_id, role, pid, host, data, updated)
        VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (conn_id, role) DO UPDATE SET
        pid = EXCLUDED.pid, host = EXCLUDED.host, data = EXCLUDED.data,
        updated = EXCLUDED.updated""",
    "mariadb": f"""REPLACE INTO {HOLDERS_TABLE} (conn_id, role, pid, host, data, updated)
        VALUES (%s, %s, %s, %s, %s, %s)""",
}


class HoldersTable:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._ready = False

    def _execute(self, conn: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []

    def publish(self, conn: Any, conn_id: int, role: str, status: dict[str, Any]) -> None:
        if not self._ready:
            try:
                self._execute(conn, _CREATE[self.kind])
            except Exception as exc:  # e.g. no CREATE privilege: the lease still works
                if not self._exists(conn):
                    log.warning("dbguard: cannot create %s (%s); the lease works but "
                                "cannot say who holds it", HOLDERS_TABLE, exc)
                    raise
            self._ready = True
        self._execute(conn, _UPSERT[self.kind], (
            conn_id, role, int(status.get("pid", 0)), str(status.get("host", "")),
            json.dumps(status, sort_keys=True), float(status.get("updated") or 0.0),
        ))

    def withdraw(self, conn: Any, conn_id: int, role: str) -> None:
        if self._exists(conn):
            self._execute(conn, f"DELETE FROM {HOLDERS_TABLE} WHERE conn_id = %s AND "
                          "role = %s", (conn_id, role))

    def read(self, conn: Any, conn_ids: Iterable[int]) -> list[tuple[int, dict[str, Any]]]:
        ids = sorted(set(conn_ids))
        if not ids or not self._exists(conn):
            return []
        marks = ", ".join(["%s"] * len(ids))
        rows = self._execute(conn, f"SELECT conn_id, data FROM {HOLDERS_TABLE} "
                             f"WHERE conn_id IN ({marks}) ORDER BY conn_id, role", ids)
        found = []
        for conn_id, data in rows:
            try:
                found.append((int(conn_id), dict(json.loads(data))))
            except (ValueError, TypeError):
                continue
        return found

    def remove_others(self, conn: Any, keep: Iterable[int]) -> None:
        """Drop rows of connections that hold no lock of the lease (they died)."""
        if not self._exists(conn):
            return
        ids = sorted(set(keep))
        where = f"WHERE conn_id NOT IN ({', '.join(['%s'] * len(ids))})" if ids else ""
        self._execute(conn, f"DELETE FROM {HOLDERS_TABLE} {where}", ids or None)

    def _exists(self, conn: Any) -> bool:
        if self._ready:
            return True
        if self.kind == POSTGRESQL:
            sql = "SELECT to_regclass(%s) IS NOT NULL"
        else:
            sql = ("SELECT COUNT(*) > 0 FROM information_schema.TABLES "
                   "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s")
        rows = self._execute(conn, sql, (HOLDERS_TABLE,))
        self._ready = bool(rows and rows[0][0])
        return self._ready
