"""The plugin manager: built-in plugins, then third-party ones from the ``dbguard`` group.

``DBGUARD_LOAD_PLUGINS`` (comma-separated names) loads only those third-party plugins;
set it empty to load none. ``DBGUARD_BLOCK_PLUGINS`` (comma-separated) skips the ones named.
"""

from __future__ import annotations

import importlib
import os
import threading
from importlib.metadata import entry_points

import pluggy

from dbguard_plugin.errors import ConfigError
from dbguard_plugin.plugin import hookspecs

#: The built-in tracking plugin's name: the guard calls it directly when it is the only
#: implementation of ``dbguard_order_event`` (the hot path, no hook call).
TRACKING = "dbguard_plugin.tracking"
#: The built-in recovery plugin's name: the deprecated ``Guard.recover()`` reaches
#: recovery (an operation, above the guard) through it.
RECOVERY = "dbguard_plugin.recovery"

#: Built-in plugins: registered name (kept from 0.1, shown by ``dbguard status``) -> module.
DEFAULT_PLUGINS = {
    TRACKING: "dbguard_plugin.builtin.tracking",
    "dbguard_plugin.autobackup": "dbguard_plugin.builtin.autobackup",
    RECOVERY: "dbguard_plugin.builtin.recovery",
}

LOAD_ENV = "DBGUARD_LOAD_PLUGINS"
BLOCK_ENV = "DBGUARD_BLOCK_PLUGINS"

pm = pluggy.PluginManager("dbguard")
pm.add_hookspecs(hookspecs)

_loaded = False
_load_lock = threading.Lock()


def _names(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in and installed plugins, once per process, and validate them."""
    global _loaded
    with _load_lock:
        if _loaded:
            return pm
        for name, module in DEFAULT_PLUGINS.items():
            if pm.get_plugin(name) is None:
                pm.register(importlib.import_module(module), name=name)
        allow, block = _names(LOAD_ENV), _names(BLOCK_ENV) or set()
        for ep in entry_points(group="dbguard"):
            if ep.name in block or (allow is not None and ep.name not in allow):
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except pluggy.PluginValidationError as exc:
                raise ConfigError(
                    f"plugin {ep.name!r} ({ep.value}) is invalid: {exc}; "
                    f"fix the plugin or skip it with {BLOCK_ENV}={ep.name}"
                ) from None
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigError(
                f"a plugin implements a hook dbguard does not have: {exc}. "
                f"Hook names start with 'dbguard_'; fix the spelling or skip the plugin "
                f"with {BLOCK_ENV}=NAME"
            ) from None
        _loaded = True
        return pm


def plugin_names() -> list[str]:
    """Registered plugin names, built-in first, for ``dbguard status``."""
    load_plugins()
    return [name for name, _ in pm.list_name_plugin()]
