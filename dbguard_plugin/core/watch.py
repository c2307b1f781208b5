"""Noticing, from a host's loop, that another process replaced the database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbguard_plugin import signals
from dbguard_plugin.core import generation
from dbguard_plugin.events import Operation

#: What generation.json names when a restore's backup went in (last-replacement.json
#: then names the backup and the safety backup).
_RESTORES = ("restore", "rollback", "recovery")


@dataclass(frozen=True)
class Replacement:
    """A replacement made by another process: the operation a host's refresh hook is
    told, and the kind ``database-replaced`` names (``restore``, ``move``, ...)."""

    operation: Operation
    kind: str
    backup_id: str = ""
    safety_id: str = ""

    def announce(self, sender: object) -> None:
        """``database-replaced`` in this process, as the replacing process sent it there,
        with ``elsewhere=True``."""
        signals.notify(signals.database_replaced, sender, operation=self.kind,
                       backup_id=self.backup_id, safety_id=self.safety_id, elsewhere=True)


class Watch:
    """Follows the generation stamp of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = os.path.join(state_dir, generation.GENERATION)
        self.state_dir = state_dir
        self.generation = generation.read(state_dir)[0]
        # (inode, mtime, size) of the stamp when last read; () = never
        self.stamp: tuple[int, ...] | None = ()

    def changed(self) -> Replacement | None:
        """The replacement made since the last call, or None.

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
        number, kind = generation.read_kind(self.state_dir) if stamp else (0, None)
        if number == self.generation:
            return None
        self.generation = number
        return self._replacement(generation.told(kind), kind)

    def _replacement(self, operation: Operation, recorded: str | None) -> Replacement:
        kind = recorded or operation.value
        if kind not in _RESTORES:
            return Replacement(operation, kind)
        last = generation.last_replacement(self.state_dir) or {}
        return Replacement(operation, kind, str(last.get("backup_id") or ""),
                           str(last.get("safety_id") or ""))

