"""Counting rows in a mariadb-dump stream, however it is cut into chunks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard_plugin.engines.server.sqldump import DumpReader

_value = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.just("NULL"),
    st.text(alphabet="ab(),;'\\`x\n", max_size=8).map(
        lambda t: "'" + t.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
        + "'"),
)
_row = st.lists(_value, min_size=1, max_size=4).map(lambda vs: "(" + ",".join(vs) + ")")
_table = st.tuples(st.sampled_from(["trades", "orders", "we`ird", "t;x"]),
                   st.lists(st.lists(_row, min_size=1, max_size=5), max_size=3))


def dump(tables, one_line):
    out = ["-- MariaDB dump 10.19", "/*!40101 SET NAMES utf8mb4 */;"]
    for name, statements in tables:
        quoted = "`" + name.replace("`", "``") + "`"
        out += [f"DROP TABLE IF EXISTS {quoted};", f"CREATE TABLE {quoted} (",
                "  `id` int(11) NOT NULL", ") ENGINE=InnoDB;"]
        for rows in statements:
            if one_line:
                out.append(f"INSERT INTO {quoted} VALUES " + ",".join(rows) + ";")
            else:
                out += [f"INSERT INTO {quoted} VALUES"] + [
                    row + ("," if i < len(rows) - 1 else ";") for i, row in enumerate(rows)]
    out.append("-- Dump completed on 2026-11-29  7:00:00")
    return ("\n".join(out) + "\n").encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(_table, max_size=4, unique_by=lambda t: t[0]), st.booleans(),
       st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_rows_are_counted_in_any_chunking(tables, one_line, cuts):
    data = dump(tables, one_line)
    reader = DumpReader()
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        reader.feed(data[pos:pos + step])
        pos, i = pos + step, i + 1
    counts = reader.close()
    assert counts == {name: sum(len(rows) for rows in statements)
                      for name, statements in tables}
    assert reader.complete


def test_a_cut_dump_is_not_complete():
    reader = DumpReader()
    reader.feed(b"CREATE TABLE `a` (\nINSERT INTO `a` VALUES\n(1),\n(2")
    assert reader.close() == {"a": 2}
    assert not reader.complete
