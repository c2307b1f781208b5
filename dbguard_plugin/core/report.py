"""What ``dbguard status`` shows of one guard, as plain data."""

from __future__ import annotations

from typing import Any

from dbguard_plugin.core import vetoes
from dbguard_plugin.core.trading import Trading
from dbguard_plugin.location import DatabaseLocation
from dbguard_plugin.settings.config import Config


def guard_status(config: Config, location: DatabaseLocation, trading: Trading,
                 backups_dir: str, problem: str | None, plugins: list[str]) -> dict[str, Any]:
    view = trading.lease.probe()
    return {
        "database": location.redacted,
        "file": str(location.sqlite_path) if location.sqlite_path else None,
        "warnings": [problem] if problem is not None else [],
        "environment": config.environment,
        "enabled": config.enabled,
        "state_dir": str(location.state_dir),
        "lease": {
            "orders": "free" if view.orders_free else "held",
            "session": "free" if view.session_free else "held",
            "holders": [vetoes.holder_dict(h) for h in view.holders],
        },
        "this_process": trading.state.snapshot().as_dict(),
        "paused": trading.paused,
        "backups": backups_dir,
        "plugins": plugins,
    }
