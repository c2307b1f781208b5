"""Fixtures and hooks of the torture suite: the size option and the printed summary.

Every test records what it exercised into the session's :class:`~harness.Tally` (cycles
run, crash points, faults, bad inputs refused, rows lost, corrupt databases); the table is
printed at the end of the run and kept in docs/reliability.rst. The target for the last
two is zero.
"""

from __future__ import annotations

import pytest
from harness import CI_CYCLES, TALLY, Tally


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--torture-cycles", type=int, default=CI_CYCLES,
        help=f"backup-then-restore cycles of the torture loop (default {CI_CYCLES}; "
             "1000 for a soak run)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = TALLY.rows()
    width = max(len(name) for name, _ in rows)
    terminalreporter.section("dbguard torture summary")
    for name, value in rows:
        terminalreporter.write_line(f"{name:<{width}}  {value:>6}")


@pytest.fixture
def tally() -> Tally:
    """The session's tally; tests add what they exercised and what they found."""
    return TALLY


@pytest.fixture
def cycles(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--torture-cycles"))


