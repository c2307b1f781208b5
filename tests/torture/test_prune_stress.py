"""``dbguard prune`` (keep_last = 1) in a loop in another process beside 50 restore and
rollback cycles: every rollback succeeds, and last-replacement.json always names a
backup whose files exist (tests/test_pins.py runs the same with fewer cycles)."""

from __future__ import annotations

from collections.abc import Callable

from harness import Tally

CYCLES = 50


def test_prune_in_a_loop_beside_50_restore_and_rollback_cycles(
    prune_beside_cycles: Callable[[int], None], tally: Tally,
) -> None:
    prune_beside_cycles(CYCLES)
    tally.cycles += CYCLES
