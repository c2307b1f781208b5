"""Module names before 0.2's layered layout, kept importable with a DeprecationWarning.

``import dbguard_plugin.restore`` (or ``from dbguard_plugin import restore``) still works
and returns the module at its new place; the warning names that place.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

#: Old module name (under dbguard_plugin) -> where it lives now.
RENAMED = {
    "guard": "core.guard", "audit": "core.audit",
    "tracking": "builtin.tracking", "autobackup": "builtin.autobackup",
    "recovery": "operations.recovery", "hookspecs": "plugin.hookspecs",
    "plugins": "plugin.manager", "config": "settings.config",
    "profiles": "settings.profiles", "profile_store": "operations.profile_store",
    "manifest": "catalog.manifest", "retention": "catalog.retention",
    "journal": "catalog.journal", "backup": "engines.sqlite.backup",
    "snapshot": "engines.sqlite.snapshot", "sqlite_facts": "engines.sqlite.facts",
    "verify": "engines.sqlite.verify", "preview": "engines.preview",
    "evidence": "engines.sqlite.evidence", "lease": "engines.lease",
    "restore": "operations.restore", "move": "operations.move",
    "doctor": "operations.doctor", "demo": "cli.demo", "cli_profile": "cli.profile",
    "servers": "engines.server",
}

_PREFIX = "dbguard_plugin."


def new_name(old: str) -> str | None:
    """The module's name now, for an old ``dbguard_plugin.X`` name, or None."""
    return RENAMED.get(old)


def load(old: str) -> ModuleType:
    """Import the module that was ``dbguard_plugin.<old>``, warning once per import."""
    target = _PREFIX + RENAMED[old]
    warnings.warn(f"dbguard_plugin.{old} moved to {target} in 0.2; import it from there",
                  DeprecationWarning, stacklevel=3)
    return importlib.import_module(target)


# Duck-typed, not subclasses of importlib.abc's classes: importing importlib.abc costs
# 15 ms (it loads importlib.resources), paid by every dbguard command.
class _Loader:
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return load(self.old)

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[_PREFIX + self.old] = module  # the old name is an alias, not a copy


class Finder:
    """Resolves the old names; installed by ``dbguard_plugin/__init__``."""

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX):
            return None
        old = fullname[len(_PREFIX):]
        if old not in RENAMED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(old))  # type: ignore[arg-type]


def install() -> None:
    if not any(isinstance(finder, Finder) for finder in sys.meta_path):
        # First: a directory left from 0.1 (its __pycache__) must not shadow the alias.
        sys.meta_path.insert(0, Finder())
