"""Configuration, read from the bot's own config file.

A JSON file with a ``"dbguard"`` object (freqtrade's config.json accepts extra keys; its
top-level ``db_url`` is used when dbguard names none) or a TOML file with a ``[dbguard]``
table. Every error names the file, the key, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dbguard_plugin.catalog import default_directory
from dbguard_plugin.catalog.codecs import COMPRESSIONS
from dbguard_plugin.engines.preview import DEFAULT_OPEN_ORDERS, DEFAULT_OPEN_TRADES, OpenRule
from dbguard_plugin.errors import ConfigError, shown
from dbguard_plugin.events import Operation
from dbguard_plugin.files import NotAFile, read_small
from dbguard_plugin.location import locate, redact
from dbguard_plugin.settings import toml
from dbguard_plugin.settings.checks import CONTROL, check_url
from dbguard_plugin.settings.profile_file import ProfileFile
from dbguard_plugin.settings.profiles import ENVIRONMENTS, SESSION_VETOES, Profile


@dataclass(frozen=True)
class Config:
    """dbguard's settings for one database."""

    enabled: bool = True
    db_url: str | None = None
    environment: str = "production"
    state_dir: str | None = None
    session_vetoes: tuple[Operation, ...] | None = None
    maintenance_wait: float = 0.0
    audit_log: str | None = None
    # -- backups ------------------------------------------------------------------
    backup_dir: str | None = None
    backup_on_session_start: bool = True
    backup_on_session_end: bool = True
    backup_interval: float = 0.0
    require_backup_before_session: bool | None = None
    compression: str = "none"
    backup_method: str = "snapshot"
    storage: str = "files"
    keep_last: int = 10
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 0
    max_age_days: int = 0
    busy_timeout: float = 30.0
    # -- restores -------------------------------------------------------------------
    restore_check: str = "integrity_check"
    open_orders: OpenRule = DEFAULT_OPEN_ORDERS
    open_trades: OpenRule = DEFAULT_OPEN_TRADES
    #: The environment profile applied (see :mod:`dbguard_plugin.settings.profiles`), or "".
    profile: str = ""
    #: Where the settings came from, for error messages.
    source: str = field(default="defaults", compare=False)

    @property
    def vetoed_by_session(self) -> tuple[Operation, ...]:
        if self.session_vetoes is not None:
            return self.session_vetoes
        return SESSION_VETOES.get(self.environment, SESSION_VETOES["production"])

    @property
    def requires_backup_before_session(self) -> bool:
        if self.require_backup_before_session is not None:
            return self.require_backup_before_session
        return self.environment == "production"

    def with_db(self, db_url: str | None) -> Config:
        if db_url is None:
            return self
        return dataclasses.replace(self, db_url=db_url)

    # -- loading ------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read *path* (JSON or TOML, by suffix or content)."""
        file = _config_file(path)
        document = _parse(file, _read_text(file))
        if not isinstance(document, dict):
            raise ConfigError(f"{file}: expected an object at the top level")
        section = document.get("dbguard", {})
        if not isinstance(section, dict):
            raise ConfigError(
                f"{file}: 'dbguard' must be an object/table of settings, "
                f"not {type(section).__name__}"
            )
        settings = dict(section)
        host_url = document.get("db_url")
        if "db_url" not in settings and isinstance(host_url, str):
            # the host's own key, named as the file spells it when it is refused
            check_url(f"{file}: db_url", host_url)
            settings["db_url"] = host_url
        config = cls.from_mapping(settings, source=str(file))
        # Directories in a config file mean the same thing from any working directory.
        base = file.parent.absolute()
        changes: dict[str, Any] = {
            key: str(base / Path(value).expanduser())
            for key in ("state_dir", "backup_dir", "audit_log")
            if isinstance(value := getattr(config, key), str)
            and not Path(value).expanduser().is_absolute()
        }
        return dataclasses.replace(config, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "settings") -> Config:
        known = {f.name for f in fields(cls)} - {"source", "profile"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                # why here: difflib only for the error, never for a config that is right
                import difflib

                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                named = key if isinstance(key, str) and key.isprintable() else shown(key)
                raise ConfigError(
                    f"{source}: unknown key dbguard.{named}{hint}; "
                    f"known keys: {', '.join(sorted(known))}"
                )
            values[key] = _VALIDATORS[key](source, key, value)
        return cls(source=source, **values)


def resolve(
    path: str | Path | None = None, db_url: str | None = None, profile: str | None = None
) -> Config:
    """The settings for the bot config at *path*, with an environment profile applied.

    *profile* names one; without it the profiles file's active profile applies. Without
    a profiles file (and without *profile*) the settings are the config file's alone.
    An explicit *db_url* for another database than the active profile's leaves the
    profiles out; with an explicit *profile* it is an error.
    """
    if db_url is not None:
        check_url("--db", db_url)
    config = Config.load(path) if path is not None else Config()
    store = ProfileFile.locate(path)
    chosen = store.get(profile) if profile is not None else store.active()
    if chosen is None:
        return config.with_db(db_url)
    if chosen.db_url and db_url and chosen.db_url != db_url:
        if profile is None:
            return config.with_db(db_url)  # --db names another database: today's meaning
        raise ConfigError(
            f"--db {redact(db_url)} is not the database of profile {chosen.name} "
            f"({redact(chosen.db_url)}); drop --db, or change the profile with "
            f"'dbguard profile update {chosen.name} --db-url URL'"
        )
    return apply_profile(config, chosen, db_url, store.path.parent)


def apply_profile(
    config: Config, profile: Profile, db_url: str | None = None, base_dir: Path | None = None
) -> Config:
    """*config* with *profile*'s database, catalog, retention and rules laid over it."""
    url = profile.db_url or db_url or config.db_url
    changes: dict[str, Any] = {
        "db_url": url, "environment": profile.environment, "profile": profile.name,
    }
    if profile.strictness is not None:
        changes["session_vetoes"] = profile.session_vetoes
    for key in ("keep_last", "keep_daily", "keep_weekly", "require_backup_before_session"):
        if getattr(profile, key) is not None:
            changes[key] = getattr(profile, key)
    if profile.catalog_dir:
        catalog = Path(profile.catalog_dir).expanduser()
        changes["backup_dir"] = str(catalog if catalog.is_absolute() or base_dir is None
                                    else base_dir / catalog)
    elif url and profile.name != "production":
        # Each profile keeps its own catalog, also when profiles share one database.
        default = Path(config.backup_dir) if config.backup_dir else \
            default_directory(locate(url, config.state_dir).state_dir)
        changes["backup_dir"] = str(default.with_name(f"{default.name}-{profile.name}"))
    return dataclasses.replace(config, **changes)


def _config_file(path: str | Path) -> Path:
    if isinstance(path, str) and CONTROL.search(path):
        raise ConfigError(f"--config {shown(path)} is invalid: a config file's path has "
                          "no control characters")
    return Path(path).expanduser()


def _read_text(file: Path) -> str:
    """The file's text; ConfigError (exit 2) naming the file for anything unreadable."""
    try:
        raw = read_small(file)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file; check --config") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a config file; check --config") \
            from None
    except NotAFile as exc:
        raise ConfigError(f"{exc}; check --config") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}); save the config file as UTF-8") from None


def _parse(file: Path, text: str) -> Any:
    """JSON or TOML, by suffix or content; every parse failure is a ConfigError."""
    if file.suffix.lower() == ".toml":
        return _parse_toml(file, text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if file.suffix.lower() == ".json":
            raise ConfigError(
                f"{file}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        return _parse_toml(file, text)
    except RecursionError:
        raise ConfigError(f"{file}: not a usable config: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"{file}: not valid JSON: {exc}") from None


def _parse_toml(file: Path, text: str) -> Any:
    try:
        return toml.loads(text)
    except toml.TomlError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file}: not a usable config: nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def _bad(source: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(
        f"{source}: dbguard.{key} = {shown(value)} is invalid: expected {expected}")


def _bool(source: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(source, key, value, "true or false")
    return value


def _text(source: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(source, key, value, "a non-empty string")
    if CONTROL.search(value):
        raise _bad(source, key, value, "a path without control characters (NUL, newline, "
                   "tab, ...)")
    return value


def _url(source: str, key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(source, key, value, "a SQLAlchemy URL string such as sqlite:////path/db")
    return None if value is None else check_url(f"{source}: dbguard.{key}", value)


def _optional_bool(source: str, key: str, value: Any) -> bool | None:
    return None if value is None else _bool(source, key, value)


def _compression(source: str, key: str, value: Any) -> str:
    if value not in COMPRESSIONS:
        raise _bad(source, key, value, "one of " + ", ".join(COMPRESSIONS))
    if value == "zstd" and importlib.util.find_spec("zstandard") is None:
        raise ConfigError(
            f"{source}: dbguard.{key} = 'zstd' needs the zstandard package: "
            "pip install 'dbguard-plugin[zstd]', or use gzip or none"
        )
    return str(value)


def _backup_method(source: str, key: str, value: Any) -> str:
    if value not in ("snapshot", "backup-api"):
        raise _bad(source, key, value, "one of snapshot, backup-api")
    return str(value)


def _storage(source: str, key: str, value: Any) -> str:
    if value not in ("files", "repository"):
        raise _bad(source, key, value, "one of files, repository")
    return str(value)


def _count(minimum: int) -> Callable[[str, str, Any], int]:
    def check(source: str, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= 10_000:
            raise _bad(source, key, value, f"a whole number from {minimum} to 10000")
        return value

    return check


def _interval(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        value == 0 or 60 <= value <= 7 * 86_400
    ):
        raise _bad(source, key, value, "0 (off) or a number of seconds from 60 to 604800")
    return float(value)


def _check_level(source: str, key: str, value: Any) -> str:
    if value not in ("quick_check", "integrity_check"):
        raise _bad(source, key, value, "quick_check or integrity_check")
    return str(value)


def _open_rule(source: str, key: str, value: Any) -> OpenRule:
    expected = 'an object {"table": "orders", "key": "id", "where": "ft_is_open = 1"}'
    if not isinstance(value, dict) or set(value) - {"table", "key", "where"}:
        raise _bad(source, key, value, expected)
    default = DEFAULT_OPEN_ORDERS if key == "open_orders" else DEFAULT_OPEN_TRADES
    parts = {"table": default.table, "key": default.key, "where": default.where, **value}
    if not all(isinstance(v, str) and v.strip() for v in parts.values()):
        raise _bad(source, key, value, expected)
    return OpenRule(parts["table"], parts["key"], parts["where"])


def _environment(source: str, key: str, value: Any) -> str:
    if value not in ENVIRONMENTS:
        raise _bad(source, key, value, "one of " + ", ".join(ENVIRONMENTS))
    return str(value)


def _operations(source: str, key: str, value: Any) -> tuple[Operation, ...]:
    names = ", ".join(op.value for op in Operation)
    if not isinstance(value, list):
        raise _bad(source, key, value, f"a list of operations from: {names}")
    try:
        return tuple(Operation.parse(item) for item in value)
    except (ValueError, AttributeError):
        raise _bad(source, key, value, f"a list of operations from: {names}") from None


def _seconds(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise _bad(source, key, value, "a number of seconds from 0 to 3600")
    return float(value)


_VALIDATORS: dict[str, Callable[[str, str, Any], Any]] = {
    "enabled": _bool,
    "db_url": _url,
    "environment": _environment,
    "state_dir": _text,
    "session_vetoes": _operations,
    "maintenance_wait": _seconds,
    "audit_log": _text,
    "backup_dir": _text,
    "backup_on_session_start": _bool,
    "backup_on_session_end": _bool,
    "backup_interval": _interval,
    "require_backup_before_session": _optional_bool,
    "compression": _compression,
    "backup_method": _backup_method,
    "storage": _storage,
    "keep_last": _count(1),
    "keep_daily": _count(0),
    "keep_weekly": _count(0),
    "keep_monthly": _count(0),
    "max_age_days": _count(0),
    "busy_timeout": _seconds,
    "restore_check": _check_level,
    "open_orders": _open_rule,
    "open_trades": _open_rule,
}
