"""SQLite URLs for test paths, importable by name from any test directory.

Not in conftest.py: pytest imports every directory's conftest.py as a module named
"conftest", so ``from conftest import ...`` would find whichever was imported last.
"""

from __future__ import annotations

import pytest


def sqlite_url_for(path: object) -> str:
    """A URL that the installed SQLAlchemy parses back to exactly *path*.

    SQLAlchemy 2.1 percent-decodes the database part of a URL and 2.0 takes it
    literally, so a directory named 'bot #2' or '50%41off' needs a different spelling
    in each; a path neither spelling can express is skipped.
    """
    import urllib.parse

    from sqlalchemy.engine import make_url

    for candidate in (f"sqlite:///{urllib.parse.quote(str(path))}", f"sqlite:///{path}"):
        if make_url(candidate).database == str(path):
            return candidate
    pytest.skip(f"this SQLAlchemy cannot name {path} in a URL")
