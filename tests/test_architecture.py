"""The layout of docs/architecture.rst holds: the packages it names exist, no module
imports one that imports it back, and the code stays readable at a glance (no function
over 60 lines, a Guard of at most 250). The layer rule itself is import-linter's
contract in pyproject.toml, run by ``tox -e lint``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dbguard_plugin"


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _tree_packages() -> list[str]:
    text = (ROOT / "docs" / "architecture.rst").read_text(encoding="utf-8")
    block = text.split(".. code-block:: text", 1)[1].split("\n\n", 2)[1]
    return re.findall(r"^ {5}(\w+)/", block, flags=re.MULTILINE)


def test_the_documented_tree_matches_the_packages() -> None:
    listed = _tree_packages()
    assert listed, "docs/architecture.rst lists no package"
    for name in listed:
        assert (PACKAGE / name / "__init__.py").is_file(), f"dbguard_plugin/{name}/ is gone"
    actual = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert actual == set(listed), "a package is missing from docs/architecture.rst"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(
                        graph.find_modules_directly_imported_by(child)))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    # grimp counts every import: at module level, in functions, under TYPE_CHECKING
    graph = grimp.build_graph("dbguard_plugin", cache_dir=None)
    assert _cycles(graph) == []


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _length(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    start = min([d.lineno for d in decorators] + [node.lineno])  # type: ignore[attr-defined]
    return int(node.end_lineno) - start + 1  # type: ignore[attr-defined]


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({_length(fn)} lines)"
            for path in _sources() for fn in _functions(ast.parse(path.read_text()))
            if _length(fn) > 60]
    assert long == []


def test_the_guard_is_at_most_250_lines() -> None:
    tree = ast.parse((PACKAGE / "core" / "guard.py").read_text())
    (guard,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Guard"]
    assert _length(guard) <= 250


#: dbguard's own modules that may wait for first use: the server engine (it loads
#: SQLAlchemy and a driver) and the server restore that drives it; the SQLite engine's
#: backup, verify and preview, the engines' shared backup and verify values, retention,
#: and recovery's deciding (with the move it may finish), which ``dbguard status`` and
#: ``check`` never need (bench/cli_startup.py).
COSTLY_OWN = ("dbguard_plugin.engines.server", "dbguard_plugin.operations.server_restore",
              "dbguard_plugin.engines.sqlite", "dbguard_plugin.engines.backup",
              "dbguard_plugin.engines.verify", "dbguard_plugin.catalog.retention",
              "dbguard_plugin.operations.settle", "dbguard_plugin.operations.move")

#: The command line may load a command's guard and operations when the command runs:
#: ``dbguard --help`` and ``status`` must answer in well under a second (bench/cli_startup).
LOADS_ON_USE = "cli"


def _own_and_cheap(name: str, relative: int, package: str) -> bool:
    if package == LOADS_ON_USE:
        return bool(relative)
    return bool(relative) or (name.startswith("dbguard_plugin")
                              and not name.startswith(COSTLY_OWN))


def _said_why(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above the run of imports it belongs to."""
    if "#" in lines[lineno - 1]:
        return True
    above = lineno - 2
    while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_in_functions_defer_a_costly_dependency_and_say_why(path: Path) -> None:
    """dbguard's own modules import at the top (a cycle is not a reason); an import in a
    function defers an optional or costly library (or the server engine, which loads
    one), with a comment saying so."""
    lines = path.read_text().splitlines()
    for fn in _functions(ast.parse("\n".join(lines))):
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                alias.name for alias in node.names]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            relative = node.level if isinstance(node, ast.ImportFrom) else 0
            package = path.relative_to(PACKAGE).parts[0]
            assert not any(_own_and_cheap(n, relative, package) for n in names), where
            assert _said_why(lines, node.lineno), f"{where}: say why this import waits"


def test_guard_recover_still_works_and_says_where_it_moved(guard: object) -> None:
    with pytest.warns(DeprecationWarning, match=r"operations\.recovery\.recover\(guard\)"):
        assert guard.recover() == []  # type: ignore[attr-defined]


def test_old_module_names_import_with_a_warning() -> None:
    import importlib
    import sys

    from dbguard_plugin.operations import restore

    sys.modules.pop("dbguard_plugin.restore", None)
    with pytest.warns(DeprecationWarning, match=r"dbguard_plugin\.operations\.restore"):
        old = importlib.import_module("dbguard_plugin.restore")
    assert old is restore
    with pytest.warns(DeprecationWarning, match="moved to"):
        from dbguard_plugin import profile_store  # noqa: F401
