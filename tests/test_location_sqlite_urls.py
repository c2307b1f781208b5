"""A SQLite URL read without SQLAlchemy means exactly what SQLAlchemy reads in it: the
same file, the same redacted spelling, the same error, whatever the spelling."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import DatabaseLocation, locate, parse_url

Answer = tuple[object, ...]


def through_sqlalchemy(url: str) -> Answer:
    """What locate() answers when SQLAlchemy parses the URL (it does for a URL object)."""
    try:
        return answer(locate(parse_url(url)))
    except (ConfigError, ValueError) as exc:
        return ("error", type(exc).__name__, str(exc))


def located(url: str) -> Answer:
    try:
        return answer(locate(url))
    except (ConfigError, ValueError) as exc:
        return ("error", type(exc).__name__, str(exc))


def answer(where: DatabaseLocation) -> Answer:
    return (where.backend, where.redacted, where.sqlite_path, where.identity,
            where.state_dir)


SPELLINGS = [
    "sqlite:///rel.sqlite", "sqlite:////abs/dir/tradesv3.sqlite", "sqlite:///~/bot.sqlite",
    "sqlite:///file:/abs/x.sqlite?mode=rw&uri=true", "sqlite:///file:rel.db?mode=ro",
    "sqlite:///file://localhost/abs/x.db", "sqlite:///file://elsewhere/abs/x.db",
    "sqlite+pysqlite:////abs/a b/c+d.sqlite", "sqlite:///a%20b.sqlite", "sqlite:///50%41off",
    "sqlite:///x.db?b=2&a=1&a=0&c=", "sqlite:///x.db?", "sqlite:///x.db?timeout=5#frag",
    "sqlite:///x.db?password=secret", "sqlite:///caf\u00e9.db", "sqlite:///a#b.db",
    "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
    "sqlite:///file:x.db?mode=memory", "sqlite:///file:/abs/x.db?mode=memory&uri=true",
    "sqlite:///file:/abs/x.db?vfs=memdb&uri=true", "sqlite:////abs/x.db?mode=memory",
    "sqlite:///x\x00y", "sqlite:///x.db?a=1\nb=2",
    "sqlite://localhost/x.db", "sqlite://:/x.db", "sqlite://user:pw@/x.db", "SQLITE:///x.db",
]


@pytest.mark.parametrize("url", SPELLINGS)
def test_every_spelling_means_what_sqlalchemy_reads(url: str) -> None:
    assert located(url) == through_sqlalchemy(url)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["sqlite:///", "sqlite:////tmp/", "sqlite://", "sqlite+pysqlite:///",
                        "sqlite:///file:"]),
       st.text(alphabet="ab/.~ +-_%:?&=#@\u00e9;,[]41\n", max_size=14))
def test_any_sqlite_url_means_what_sqlalchemy_reads(prefix: str, rest: str) -> None:
    assert located(prefix + rest) == through_sqlalchemy(prefix + rest)


def test_the_sqlalchemy_url_is_still_there_when_asked_for(tmp_path: Path) -> None:
    where = locate(f"sqlite:///{tmp_path}/bot.sqlite")
    moved = where.url.set(database=str(tmp_path / "new.sqlite"))
    assert moved.render_as_string(hide_password=False) == f"sqlite:///{tmp_path}/new.sqlite"
    server = locate("postgresql://bot:s3cret@db.example/trades")
    assert server.url.password == "s3cret"
    assert "s3cret" not in repr(server)
