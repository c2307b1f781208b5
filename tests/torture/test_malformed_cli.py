"""Every generated malformed input of tests/malformed.py, 200 of each kind, each in its
own ``dbguard`` process: the documented exit code, the input named, no traceback (the
rule per kind is in tests/test_malformed_inputs.py). DBGUARD_MALFORMED_COUNT sets the
count per kind (default 200)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Tally
from malformed import KINDS, cases, finish, make_world, problems

COUNT = int(os.environ.get("DBGUARD_MALFORMED_COUNT", "200"))


@pytest.mark.parametrize("kind", KINDS)
def test_generated_malformed_input_in_real_processes(
    kind: str, tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tally: Tally,
) -> None:
    world = make_world(tmp_path)
    failures: list[str] = []
    tracebacks = 0
    for case in cases(kind, world, COUNT):
        result = run_cli(*case.args)
        tracebacks += "Traceback" in result.stderr
        failures += problems(case, result.returncode, result.stdout, result.stderr)
        finish(case)
        tally.bad_inputs.add(f"generated {case}")
    assert tracebacks == 0
    assert not failures, f"{len(failures)} of {COUNT}:\n" + "\n".join(failures[:5])
