"""TOML text (the config file and the profiles file), parsed by the standard library's
``tomllib`` (``tomli`` before Python 3.11) and written by ``tomli-w``. Each is imported
with the first file read or written, so that a ``dbguard status`` or ``check`` on a bot
that has neither file loads neither: every command's start counts (see
bench/cli_startup.py)."""

from __future__ import annotations

import sys
from typing import Any


class TomlError(ValueError):
    """The text is not valid TOML (the message is the parser's: line and column) or is
    nested too deeply to read."""


def loads(text: str) -> dict[str, Any]:
    """The document in *text*; TomlError when it cannot be read."""
    if sys.version_info >= (3, 11):
        import tomllib  # why here: see the module docstring
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # why here: see the module docstring
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlError(str(exc)) from None
    except RecursionError:  # the parser recurses once per nested array or table
        raise TomlError("nested too deeply") from None


def dumps(document: dict[str, Any]) -> str:
    """*document* as TOML text (by tomli-w), for the profiles file dbguard writes."""
    # why here: as in loads(); only a command that changes a profile writes one
    import tomli_w

    return tomli_w.dumps(document)
