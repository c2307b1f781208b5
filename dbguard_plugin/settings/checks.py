"""What every source of settings (the config file, ``--db``, the profiles file, the
``profile`` commands) holds a value to: a database URL and a path carry no control
character; a bad URL is shown without its password."""

from __future__ import annotations

import re

from dbguard_plugin.errors import ConfigError, shown
from dbguard_plugin.location import redact_unparsed

#: Control characters (NUL above all: no file system takes it) in a path or URL are
#: always a mistake, and would otherwise surface as a ValueError deep in os or SQLite,
#: or as a line break in a directory's name and in every message that names it.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_url(where: str, value: str) -> str:
    """*value* if it can be a database URL; ConfigError (exit 2) saying *where* it came
    from (``--db``, a file and key) and what is allowed."""
    # a URL refused here may not parse at all; a path is long, and the whole one helps
    rendered = shown(redact_unparsed(value), limit=1024)
    if CONTROL.search(value):
        raise ConfigError(f"{where} = {rendered} is invalid: a database URL has no control "
                          "characters (NUL, newline, tab, ...)")
    if "://" not in value:
        raise ConfigError(f"{where} = {rendered} is invalid: expected a SQLAlchemy URL "
                          "such as sqlite:////path/to/tradesv3.sqlite")
    return value
