"""``dbguard prune`` (keep_last = 1) in a loop in another process beside 50 restore and
rollback cycles: every rollback succeeds, and last-replacement.json always names a
backup whose files exist (tests/test_pins.py runs the same with fewer cycles)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Tally
from test_pins import prune_beside_cycles

CYCLES = 50


def test_prune_in_a_loop_beside_50_restore_and_rollback_cycles(
    tmp_path: Path, db_path: Path, db_url: str, state_dir: Path,
    make_guard: Callable[..., Any], spawn: Callable[..., Any], tally: Tally,
) -> None:
    prune_beside_cycles(CYCLES, tmp_path, db_path, db_url, state_dir, make_guard, spawn)
    tally.cycles += CYCLES
