"""dbguard's settings from freqtrade's own, already merged, configuration.

Freqtrade merges its config files (``add_config_files``, several ``--config``) and
``FREQTRADE__*`` environment variables into one dict before the strategy sees it; the
``"dbguard"`` object is read from that dict, so the bot sees exactly what freqtrade
loaded. Relative directories mean what they mean to ``dbguard --config config.json``:
relative to the first config file's directory.

The active environment profile (``dbguard-profiles.toml`` beside that config file, or
the user's profiles file, as for the CLI) is laid over those settings the way
:func:`dbguard_plugin.settings.config.resolve` lays it for ``dbguard --config config.json --db
DB_URL``: freqtrade's ``db_url`` plays ``--db``, so the bot and the CLI agree on the
environment, the catalog and the rules. A profile that names another database than
freqtrade's is left out, with an error in the log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dbguard_plugin.errors import ConfigError
from dbguard_plugin.location import locate
from dbguard_plugin.settings.config import Config, apply_profile
from dbguard_plugin.settings.profile_file import ProfileFile

log = logging.getLogger(__name__)

_DIRECTORIES = ("state_dir", "backup_dir", "audit_log")


def config_file(ft_config: Mapping[str, Any]) -> Path | None:
    """The first config file freqtrade read, or None (config given on stdin or in code)."""
    files = ft_config.get("config_files") or []
    for name in files:
        if isinstance(name, str) and name != "-":
            return Path(name).expanduser().absolute()
    return None


def settings(ft_config: Mapping[str, Any]) -> Config:
    """The Config for the database this freqtrade bot writes (its ``db_url``)."""
    file = config_file(ft_config)
    source = str(file) if file is not None else "freqtrade config"
    section = ft_config.get("dbguard", {})
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{source}: 'dbguard' must be an object of settings, not {type(section).__name__}"
        )
    values = dict(section)
    bot_url = ft_config.get("db_url")
    if not isinstance(bot_url, str) or not bot_url:
        raise ConfigError(f"{source}: freqtrade has no db_url; set db_url in the config file")
    own_url = values.get("db_url")
    if own_url is not None and own_url != bot_url and _same_place(own_url, bot_url) is False:
        # Guarding another database than the one the bot writes protects nothing.
        log.error(
            "dbguard: %s: dbguard.db_url (%s) is not the database freqtrade uses (%s); "
            "dbguard guards freqtrade's. Remove dbguard.db_url from the config file so "
            "the dbguard command guards the same database",
            source, locate(own_url).redacted, locate(bot_url).redacted,
        )
    values["db_url"] = bot_url
    config = Config.from_mapping(values, source=source)
    base = file.parent if file is not None else Path.cwd()
    changes: dict[str, Any] = {
        key: str(base / Path(value).expanduser())
        for key in _DIRECTORIES
        if isinstance(value := getattr(config, key), str)
        and not Path(value).expanduser().is_absolute()
    }
    return _with_profile(dataclasses.replace(config, **changes), file, bot_url)


def _with_profile(config: Config, file: Path | None, bot_url: str) -> Config:
    """*config* with the active profile applied, as the CLI applies it for *file*."""
    store = ProfileFile.locate(file)
    active = store.active()
    if active is None:
        return config
    if active.db_url is not None and _same_place(active.db_url, bot_url) is False:
        # resolve() leaves the profiles out when --db names another database; freqtrade's
        # db_url is that --db, and the database the bot writes is the one to guard.
        log.error(
            "dbguard: the active profile %r (%s) is for %s, but freqtrade writes %s; "
            "dbguard guards freqtrade's database with the config file's settings, "
            "without the profile. Switch to this database's profile ('dbguard profile "
            "switch NAME') or point the profile at it ('dbguard profile update %s "
            "--db-url URL')",
            active.name, store.path, locate(active.db_url).redacted,
            locate(bot_url).redacted, active.name,
        )
        return config
    applied = apply_profile(config, active, bot_url, store.path.parent)
    return dataclasses.replace(applied, db_url=bot_url)


def _same_place(one: object, other: str) -> bool | None:
    """Whether two URLs name the same database; None when *one* is not a URL at all
    (Config's own validation then names the problem)."""
    if not isinstance(one, str):
        return None
    try:
        first, second = locate(one), locate(other)
    except ConfigError:
        return None
    return first.identity == second.identity
