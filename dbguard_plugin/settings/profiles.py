"""Environment profiles: the database, backups and rules of one environment.

A profile names an environment (development, testing, production or a custom one), the
database it uses, where its backups go, how long they are kept and how strictly the
guard treats an active session there. The three standard profiles exist out of the
box; :mod:`dbguard_plugin.settings.profile_file` keeps them, and the ones users add, in a file.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dbguard_plugin.errors import ConfigError, UnsafePathError
from dbguard_plugin.events import Operation
from dbguard_plugin.location import redact
from dbguard_plugin.settings.checks import CONTROL, check_url

#: What needs the host stopped: the file moves, the schema changes or another database
#: takes over.
NEEDS_HOST_STOPPED = (
    Operation.MOVE, Operation.PROFILE_SWITCH, Operation.MIGRATE, Operation.VACUUM,
    Operation.DELETE,
)


@dataclass(frozen=True)
class Strictness:
    """How an active trading session is treated, and the environment that applies it.
    Orders in flight veto under every strictness."""

    name: str
    environment: str
    session_vetoes: tuple[Operation, ...]


#: The one table of strictness, strictest first.
RULES = (
    # every risky operation waits for the session to end
    Strictness("strict", "production", tuple(Operation)),
    # only what needs the host stopped (switch, move, migrate, vacuum, delete) waits
    Strictness("standard", "testing", NEEDS_HOST_STOPPED),
    # an active session only warns
    Strictness("relaxed", "development", ()),
)
ENVIRONMENTS = tuple(rule.environment for rule in reversed(RULES))
STRICTNESS: dict[str, tuple[Operation, ...]] = {r.name: r.session_vetoes for r in RULES}
#: What an active session vetoes in each environment.
SESSION_VETOES: dict[str, tuple[Operation, ...]] = {
    r.environment: r.session_vetoes for r in RULES}
_KIND_STRICTNESS = {**{r.environment: r.name for r in RULES}, "custom": "strict"}
_STRICTNESS_ENVIRONMENT = {r.name: r.environment for r in RULES}

KINDS = (*ENVIRONMENTS, "custom")
STANDARD = ENVIRONMENTS  # one standard profile per environment

NAME_RULE = "letters, digits, '-' and '_', 1 to 64 characters"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ProfileNotFound(ConfigError):
    """No profile of that name."""


def validate_name(name: object) -> str:
    """*name* if it is a valid profile name; otherwise say what is wrong and what is allowed."""
    if not isinstance(name, str):
        raise UnsafePathError(f"a profile name must be text, not {type(name).__name__}; "
                              f"names are {NAME_RULE}")
    shown = repr(name if len(name) <= 40 else name[:40] + "...")
    problem = ""
    if not name:
        problem = "it is empty"
    elif len(name) > 64:
        problem = f"it is {len(name)} characters long"
    elif any(unicodedata.category(c) == "Cc" for c in name):
        problem = "it contains a control character"
    elif "/" in name or "\\" in name or ".." in name:
        problem = "it contains a path separator or '..'"
    elif not _NAME.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_"))})
        problem = f"it contains {', '.join(repr(c) for c in bad)}"
    if problem:
        raise UnsafePathError(f"{shown} is not a valid profile name: {problem}; "
                              f"names are {NAME_RULE}")
    return name


@dataclass(frozen=True)
class Profile:
    """One environment. Unset values (None) fall back to the bot config's settings."""

    name: str
    kind: str = "custom"
    #: The database (a SQLAlchemy URL); None: the bot config's ``db_url`` (or ``--db``).
    db_url: str | None = None
    #: Where this profile's backups go; None: ``<database>.dbguard/backups`` for the
    #: production profile, ``<database>.dbguard/backups-<name>`` for the others.
    catalog_dir: str | None = None
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    #: strict, standard or relaxed; None: by kind (production and custom strict,
    #: testing standard, development relaxed).
    strictness: str | None = None
    require_backup_before_session: bool | None = None
    description: str = ""

    def __post_init__(self) -> None:
        validate_name(self.name)
        for item in dataclasses.fields(self):
            if item.name != "name":
                check_value(f"profile {self.name}", item.name, getattr(self, item.name))

    @property
    def effective_strictness(self) -> str:
        return self.strictness or _KIND_STRICTNESS[self.kind]

    @property
    def environment(self) -> str:
        """The environment the guard applies: the kind, or for a custom kind the
        environment its strictness matches."""
        if self.kind in ENVIRONMENTS:
            return self.kind
        return _STRICTNESS_ENVIRONMENT[self.effective_strictness]

    @property
    def session_vetoes(self) -> tuple[Operation, ...]:
        return STRICTNESS[self.effective_strictness]

    @property
    def requires_backup_before_session(self) -> bool:
        if self.require_backup_before_session is not None:
            return self.require_backup_before_session
        return self.environment == "production"

    @property
    def standard(self) -> bool:
        return self.name in STANDARD

    def as_dict(self) -> dict[str, Any]:
        """Everything about the profile for output: the URL without its password."""
        return {
            **dataclasses.asdict(self),
            "db_url": redact(self.db_url) if self.db_url else None,
            "environment": self.environment,
            "effective_strictness": self.effective_strictness,
            "requires_backup_before_session": self.requires_backup_before_session,
        }

    def to_table(self) -> dict[str, Any]:
        """The profile as stored in the profiles file (unset values left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k != "name" and v is not None and v != ""}

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], source: str) -> Profile:
        """Read and check a stored profile; every error names *source* and the key."""
        validate_name(name)
        where = f"{source}: profile {name}"
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {key!r}; known keys: "
                                  f"{', '.join(sorted(known))}")
            values[key] = check_value(where, key, value)
        return cls(name=name, **values)

    def changed(self, source: str = "profile", **changes: Any) -> Profile:
        """A copy with *changes*, each checked; None unsets a value."""
        where = f"{source}: profile {self.name}"
        checked = {k: check_value(where, k, v) for k, v in changes.items()}
        return dataclasses.replace(self, **checked)  # __post_init__ checks the whole again


def check_value(where: str, key: str, value: Any) -> Any:
    """Check one profile setting; the error names *where*, the key and what is expected."""
    def bad(expected: str) -> ConfigError:
        shown = repr(redact(value)) if isinstance(value, str) else repr(value)
        return ConfigError(f"{where}: {key} = {shown} is invalid: expected {expected}")

    if key == "kind":
        if not isinstance(value, str) or value not in KINDS:
            raise bad("one of " + ", ".join(KINDS))
        return value
    if key == "strictness":
        if value is not None and (not isinstance(value, str) or value not in STRICTNESS):
            raise bad("one of " + ", ".join(STRICTNESS))
        return value
    if value is None and key not in ("description",):
        return None
    if key == "db_url":
        if not isinstance(value, str):
            raise bad("a SQLAlchemy URL such as sqlite:////path/to/tradesv3.sqlite")
        return check_url(f"{where}: {key}", value)
    if key == "catalog_dir":
        if not isinstance(value, str) or not value.strip() or CONTROL.search(value):
            raise bad("a directory path without control characters (NUL, newline, ...)")
        return value
    if key in ("keep_last", "keep_daily", "keep_weekly"):
        low = 1 if key == "keep_last" else 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000:
            raise bad(f"a whole number from {low} to 10000")
        return value
    if key == "require_backup_before_session":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "description":
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > 200 or any(
            unicodedata.category(c) == "Cc" for c in value
        ):
            raise bad("one line of text, at most 200 characters")
        return value
    raise ConfigError(f"{where}: unknown setting {key!r}")


def standard_profiles() -> list[Profile]:
    """The three profiles every installation starts with."""
    return [Profile(name, kind=name) for name in STANDARD]
