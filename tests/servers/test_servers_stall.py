"""A server that accepts the connection and never answers (a hung server, a wrong port
behind a proxy, a firewall that swallows the packets) is an error within the URL's
``connect_timeout``, never a command that hangs; its message has no password.

No real server here: a listening socket that accepts and holds every connection. Each
command runs as a real process with a deadline far above the timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from cli_runs import Cli

DRIVERS = {"postgresql": "psycopg", "mariadb": "pymysql"}
SCHEMES = {"postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}
NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB"}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    closing.set()
    listener.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("kind", sorted(DRIVERS))
@pytest.mark.parametrize("command", [["status"], ["check", "restore"], ["backup"]],
                         ids=" ".join)
def test_a_server_that_never_answers_is_an_error_in_bounded_time(
        kind: str, command: list[str], silent_port: int, run_cli: Cli) -> None:
    pytest.importorskip(DRIVERS[kind], reason=f"the {kind} driver is not installed")
    url = f"{SCHEMES[kind]}://bot:s3cret@127.0.0.1:{silent_port}/trades?connect_timeout=2"
    result = run_cli(*command, "--db", url, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot connect to {NAMES[kind]}" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
