"""SIGKILL at every crash point of a restore, a rollback and a move; then another
process commits rows, migrates (ALTER TABLE ... ADD COLUMN) and vacuums, as a bot
restarted after the crash would; then the next command recovers.

No committed row may be lost and what recovery says must be true, at every point: the
checks are those of tests/test_recovery_decision.py, which runs a sample of these cases
in the normal suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Tally
from test_crash_matrix import BACKUP, MOVE, RESTORE
from test_recovery_decision import crash_then_write, move_crash_then_write

CASES = [("restore", p) for p in BACKUP + RESTORE] + [("rollback", p) for p in BACKUP + RESTORE]


@pytest.mark.parametrize(("operation", "point"), CASES, ids=[f"{o}-{p}" for o, p in CASES])
def test_writes_after_the_crash_are_never_lost(
    operation: str, point: str, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., Any], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any], tally: Tally,
) -> None:
    crash_then_write(operation, point, "ddl", db_path=db_path, db_url=db_url,
                     state_dir=state_dir, make_guard=make_guard, run_cli=run_cli,
                     child_env=child_env, spawn=spawn)
    tally.crash_points.add(f"{operation}/{point}/then-writes")


@pytest.mark.parametrize("point", MOVE)
def test_writes_after_a_killed_move_are_never_lost(
    point: str, tmp_path: Path, db_path: Path, db_url: str,
    make_guard: Callable[..., Any], run_cli: Callable[..., Any],
    child_env: Callable[..., dict[str, str]], spawn: Callable[..., Any], tally: Tally,
) -> None:
    move_crash_then_write(point, tmp_path=tmp_path, db_path=db_path, db_url=db_url,
                          make_guard=make_guard, run_cli=run_cli, child_env=child_env,
                          spawn=spawn)
    tally.crash_points.add(f"move/{point}/then-writes")
