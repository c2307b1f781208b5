"""Sphinx configuration for the dbguard-plugin documentation."""

from __future__ import annotations

import sys
from pathlib import Path

# Build from a checkout without installing: the package sits one directory up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbguard_plugin import __version__

project = "dbguard-plugin"
author = "the dbguard-plugin authors"
copyright = "the dbguard-plugin authors, MIT License"
version = __version__
release = __version__

extensions: list[str] = []

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
highlight_language = "none"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"dbguard-plugin {__version__}"
html_static_path: list[str] = []
