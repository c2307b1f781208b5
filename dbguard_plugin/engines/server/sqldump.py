"""Reading a mariadb-dump SQL stream as it passes: tables, rows per table, completeness.

mariadb-dump writes one ``CREATE TABLE`` per table and its rows in ``INSERT`` statements:
MariaDB 10.11 puts each row tuple on a line of its own after ``INSERT INTO `t` VALUES``,
older versions put every tuple of a statement on one line. Strings are escaped, so a raw
newline never appears inside a value: counting the row lines (or, on one line, the
tuples outside strings) gives the row counts of exactly the snapshot the dump saw. A
second connection counting beside the dump would see another moment, since a MariaDB
snapshot cannot be shared. Counting is done with bytes searches, not a Python loop per
row, so it keeps up with the dump.
"""

from __future__ import annotations

import re

_HEAD = re.compile(
    rb"^(?:INSERT INTO `((?:[^`\n]|``)+)` VALUES|CREATE TABLE `((?:[^`\n]|``)+)` \("
    rb"|(-- Dump completed))", re.MULTILINE)
_STRING = re.compile(rb"'(?:[^'\\]|\\.)*'", re.DOTALL)


class DumpReader:
    """Feed it chunks; it keeps the tables and their row counts."""

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}
        self.complete = False
        self._tail = b""
        self._table: str | None = None  # inside this table's INSERT statement

    def feed(self, chunk: bytes) -> None:
        # Offsets into the chunk, not slices of it: a copy per chunk cost more than the
        # counting itself.
        start = 0
        if self._tail:
            first = chunk.find(b"\n")
            if first < 0:
                self._tail += chunk
                return
            head = self._tail + chunk[:first + 1]
            self._tail = b""
            self._scan(head, 0, len(head))
            start = first + 1
        cut = chunk.rfind(b"\n")
        if cut < start:
            self._tail = chunk[start:]
            return
        self._scan(chunk, start, cut + 1)
        self._tail = chunk[cut + 1:]

    def close(self) -> dict[str, int]:
        if self._tail:
            data = self._tail + b"\n"
            self._tail = b""
            self._scan(data, 0, len(data))
        return self.tables

    def _scan(self, data: bytes, pos: int, size: int) -> None:
        """data[pos:size] is whole lines."""
        while pos < size:
            if self._table is not None:
                end = data.find(b";\n", pos, size)
                stop = size if end < 0 else end + 2
                self.tables[self._table] += _rows(data, pos, stop)
                if end < 0:
                    return
                self._table, pos = None, stop
                continue
            match = _HEAD.search(data, pos, size)
            if match is None:
                return
            pos = match.end()
            if match.group(1) is not None:
                self._table = _name(match.group(1))
                self.tables.setdefault(self._table, 0)
            elif match.group(2) is not None:
                self.tables.setdefault(_name(match.group(2)), 0)
            else:
                self.complete = True


def _rows(data: bytes, start: int, stop: int) -> int:
    """Rows in data[start:stop], part of an INSERT statement from a line start or from
    just after its VALUES."""
    if data.startswith(b" (", start):  # every tuple on this one line
        region = data[start:stop]
        body = _STRING.sub(b"''", region) if b"'" in region else region
        return body.count(b"),(") + 1
    return data.count(b"\n(", start, stop) + (1 if data.startswith(b"(", start) else 0)


def _name(quoted: bytes) -> str:
    return quoted.replace(b"``", b"`").decode("utf-8", "replace")
