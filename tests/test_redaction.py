"""No secret leaves dbguard: not in any command's output (human or --json, with -v
logging), nor in the files it writes (manifests, the catalog marker, status, audit).

The URLs are generated (hypothesis): a password in the userinfo (percent-encoded, as a
valid URL spells it), a secret-named query parameter (``password``, ``sslpassword``,
``token``, ...), and malformed URLs whose password holds a ``/``, a space or a quote.
Server URLs point at port 1 of 127.0.0.1, where nothing listens: every command fails
fast there, and its error must not carry the secret either.
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runs import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbguard_plugin.location import locate, redact, redact_unparsed

#: Every secret starts with this, so "found in the output" never means a coincidence.
MARK = "Zq7"
SECRETS = st.text(alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-_.~",
                  min_size=6, max_size=16).map(lambda s: MARK + s)
ODD = st.tuples(SECRETS, st.sampled_from(["/", " ", '"', "'", "/x y", "@"])).map(
    lambda t: t[0][:4] + t[1] + t[0][4:])
PARAMS = st.sampled_from(["password", "sslpassword", "token", "api_key", "secret", "PWD"])
COMMANDS = (("status",), ("check", "restore"), ("backup",), ("backups",), ("doctor",),
            ("verify", "--all"), ("prune", "--dry-run"), ("restore", "X-1", "--yes"))


def server_urls(secret: str, param: str) -> list[str]:
    quoted = urllib.parse.quote(secret, safe="")
    return [f"postgresql://bot:{quoted}@127.0.0.1:1/trades",
            f"postgresql+psycopg://bot@127.0.0.1:1/trades?{param}={quoted}",
            f"mysql+pymysql://root:{quoted}@127.0.0.1:1/trades"]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged() -> Iterator[Recorder]:
    recorder = Recorder()
    logger = logging.getLogger("dbguard_plugin")
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)


def _run_all(run_cli: Cli, url: str, recorder: Recorder) -> str:
    """Every command on *url*, human and --json, with -v: all they said."""
    said = []
    for command in COMMANDS:
        for extra in ((), ("--json",)):
            result = run_cli(*command, "--db", url, "-v", *extra, in_process=True,
                             catch_exceptions=True)
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                command, result.exception)
            said.append(result.output)
    return "\n".join(said + recorder.lines)


def _files_under(*roots: Path) -> str:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.name.endswith((".sqlite", ".gz", ".zst")):
                found.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(found)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=SECRETS, param=PARAMS)
def test_no_secret_in_any_output_of_a_server_url(secret: str, param: str,
                                                 logged: Recorder, run_cli: Cli) -> None:
    for url in server_urls(secret, param):
        said = _run_all(run_cli, url, logged)
        assert MARK not in said, said[said.find(MARK) - 200:said.find(MARK) + 50]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=SECRETS, param=PARAMS)
def test_no_secret_in_the_output_or_files_of_a_sqlite_url(
    secret: str, param: str, tmp_path_factory: pytest.TempPathFactory, logged: Recorder,
    run_cli: Cli,
) -> None:
    folder = tmp_path_factory.mktemp("redact")
    db = folder / "tradesv3.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    url = f"sqlite:///{db}?{param}={urllib.parse.quote(secret, safe='')}"
    said = _run_all(run_cli, url, logged)
    assert "verified" in said, said  # the commands really ran on the database
    assert MARK not in said
    assert MARK not in _files_under(folder)


@settings(max_examples=40, deadline=None)
@given(secret=ODD)
def test_a_malformed_url_is_named_without_its_password(secret: str) -> None:
    url = f"postgresql://bot:{secret}@127.0.0.1:1/trades"
    shown = redact_unparsed(url)
    assert MARK not in shown
    assert shown.endswith("@127.0.0.1:1/trades")
    said: list[str] = []
    try:
        location = locate(url)
        said += [location.redacted, location.identity]
    except Exception as exc:  # not a URL at all: the error names it, without the secret
        said.append(str(exc))
    assert all(MARK not in text for text in said), said


def test_a_malformed_url_through_the_cli_never_shows_its_password(run_cli: Cli) -> None:
    for odd in ('pa ss', 'pa"ss', "pa/ss'", "p@ss word"):
        url = f"postgresql://bot:{MARK}{odd}@127.0.0.1:1/trades"
        result = run_cli("status", "--db", url, "--json", in_process=True,
                         catch_exceptions=True)
        assert MARK not in result.output, result.output


@pytest.mark.parametrize(("text", "shown"), [
    ("postgresql://bot:s3/cr@h/d", "postgresql://bot:***@h/d"),
    ("postgresql://bot@h/d?password=x&sslmode=require",
     "postgresql://bot@h/d?password=***&sslmode=require"),
    ("host=h password='a b' user=u", "host=h password=*** user=u"),
    ("login bot:hunter2@h failed", "login bot:***@h failed"),
    ("sqlite:////tmp/x.sqlite?token=abc", "sqlite:////tmp/x.sqlite?token=***"),
    ("sslkey=/etc/key.pem", "sslkey=/etc/key.pem"),
])
def test_redact_examples(text: str, shown: str) -> None:
    assert redact(text) == shown
