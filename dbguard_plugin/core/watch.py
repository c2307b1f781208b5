"""Noticing, from a host's loop, that another process replaced the database."""

from __future__ import annotations

import os
from pathlib import Path

from dbguard_plugin.core import generation
from dbguard_plugin.events import Operation


class Watch:
    """Follows the generation stamp of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = os.path.join(state_dir, generation.GENERATION)
        self.state_dir = state_dir
        self.generation = generation.read(state_dir)[0]
        # (inode, mtime, size) of the stamp when last read; () = never
        self.stamp: tuple[int, ...] | None = ()

    def changed(self) -> Operation | None:
        """The operation that replaced the database since the last call, or None.

        A host calls this every loop: one stat, and the file is parsed only when it
        changed. Replacements rewrite it by rename, so a new version has a new inode;
        stat before reading, so a rename between the two is seen next time."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        number, operation = generation.read(self.state_dir) if stamp else (0, None)
        if number == self.generation:
            return None
        self.generation = number
        return operation or Operation.RESTORE
