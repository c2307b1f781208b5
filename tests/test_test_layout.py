"""The test tree's own rule: no test module imports another test module or a conftest.

What tests share lives in fixtures (conftest.py) or in support modules that are not tests
(cli_runs.py, crash_cases.py, sqlite_files.py, ...). A test module imported by another
runs its module-level code twice under two names, and pytest imports every directory's
conftest.py as a module named "conftest", so ``from conftest import ...`` finds whichever
was imported last.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _forbidden(name: str) -> bool:
    return any(part.startswith("test_") or part == "conftest" for part in name.split("."))


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module an import names, in-function imports too, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # from . import conftest; from pkg import test_x
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name


def _modules() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_module_imports_a_test_module_or_a_conftest(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.relative_to(TESTS)}:{line}: imports {name}"
           for line, name in _imported(tree) if _forbidden(name)]
    assert bad == [], "\n".join(bad)


def test_the_rule_sees_every_spelling() -> None:
    source = ("import test_restore\nfrom test_pins import ids\nfrom .conftest import x\n"
              "from . import conftest\nfrom servers.test_servers_backup import y\n"
              "def f():\n    from conftest import Child\n")
    found = [name for _line, name in _imported(ast.parse(source)) if _forbidden(name)]
    assert len({line for line, name in _imported(ast.parse(source)) if _forbidden(name)}) == 6
    assert "test_restore" in found
    assert not _forbidden("sqlite_files")
    assert not _forbidden("dbguard_plugin.operations.restore")
