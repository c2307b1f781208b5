"""generation.json: every replacement counts one more and names the operation that made
it; a file written before the operation was recorded still reads, as a restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbguard_plugin.core import generation
from dbguard_plugin.events import Operation


def test_nothing_replaced_yet(tmp_path: Path) -> None:
    assert generation.read(tmp_path) == (0, Operation.RESTORE)
    assert generation.last_replacement(tmp_path) is None


@pytest.mark.parametrize(("kind", "told"), [
    ("restore", Operation.RESTORE), ("rollback", Operation.RESTORE),
    ("recovery", Operation.RESTORE), ("move", Operation.MOVE),
    ("profile_switch", Operation.PROFILE_SWITCH),
])
def test_each_replacement_counts_and_names_its_operation(tmp_path: Path, kind: str,
                                                         told: Operation) -> None:
    generation.bump(tmp_path, "restore")
    generation.bump(tmp_path, kind)
    assert generation.read(tmp_path) == (2, told)
    assert json.loads((tmp_path / generation.GENERATION).read_text())["operation"] == kind


@pytest.mark.parametrize("old", [
    {"generation": 7},  # before the operation was recorded
    {"generation": 7, "operation": "something-newer"},
    {"generation": 7, "operation": ["restore"]},
])
def test_an_old_or_unknown_record_reads_as_a_restore(tmp_path: Path,
                                                     old: dict[str, object]) -> None:
    (tmp_path / generation.GENERATION).write_text(json.dumps(old))
    assert generation.read(tmp_path) == (7, Operation.RESTORE)
    generation.bump(tmp_path, "move")
    assert generation.read(tmp_path) == (8, Operation.MOVE)


@pytest.mark.parametrize("damaged", ["", "not json", "[1, 2]", '{"generation": "x"}'])
def test_a_damaged_count_starts_again(tmp_path: Path, damaged: str) -> None:
    (tmp_path / generation.GENERATION).write_text(damaged)
    assert generation.read(tmp_path) == (0, Operation.RESTORE)
    generation.bump(tmp_path, "rollback")
    assert generation.read(tmp_path) == (1, Operation.RESTORE)


def test_a_count_of_the_wrong_type_raises_for_the_caller(tmp_path: Path) -> None:
    (tmp_path / generation.GENERATION).write_text('{"generation": [1]}')
    with pytest.raises(TypeError):
        generation.read(tmp_path)


def test_a_recovered_restore_is_recorded_as_its_own_and_counted_as_recovery(
    tmp_path: Path,
) -> None:
    generation.record(tmp_path, "rollback", "B", "S", "sqlite:///x", by="recovery")
    last = generation.last_replacement(tmp_path)
    assert last is not None
    assert (last["operation"], last["backup_id"], last["safety_id"]) == ("rollback", "B", "S")
    assert "reopened" not in last
    stored = json.loads((tmp_path / generation.GENERATION).read_text())
    assert (stored["generation"], stored["operation"]) == (1, "recovery")


def test_a_restore_records_what_it_reopened(tmp_path: Path) -> None:
    reopened = {"orders": ["1"], "trades": []}
    generation.record(tmp_path, "restore", "B", "S", "sqlite:///x", reopened)
    last = generation.last_replacement(tmp_path)
    assert last is not None
    assert last["reopened"] == reopened
    assert generation.read(tmp_path) == (1, Operation.RESTORE)
