"""SIGKILL at every crash point of a restore, a rollback and a move; then another
process commits rows, migrates (ALTER TABLE ... ADD COLUMN) and vacuums, as a bot
restarted after the crash would; then the next command recovers.

No committed row may be lost and what recovery says must be true, at every point: the
checks are those of crash_cases.py; tests/test_recovery_decision.py runs a sample of these
cases in the normal suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from crash_cases import BACKUP, MOVE, RESTORE
from harness import Tally

CASES = [("restore", p) for p in BACKUP + RESTORE] + [("rollback", p) for p in BACKUP + RESTORE]


@pytest.mark.parametrize(("operation", "point"), CASES, ids=[f"{o}-{p}" for o, p in CASES])
def test_writes_after_the_crash_are_never_lost(
    operation: str, point: str, crash_then_write: Callable[[str, str, str], Any],
    tally: Tally,
) -> None:
    crash_then_write(operation, point, "ddl")
    tally.crash_points.add(f"{operation}/{point}/then-writes")


@pytest.mark.parametrize("point", MOVE)
def test_writes_after_a_killed_move_are_never_lost(
    point: str, move_crash_then_write: Callable[[str], None], tally: Tally,
) -> None:
    move_crash_then_write(point)
    tally.crash_points.add(f"move/{point}/then-writes")
