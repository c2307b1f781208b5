"""Real faults for tests: a small filesystem that fills, and root without the
capabilities that bypass file modes. Shared by tests/test_host_faults.py and the torture
suite (tests/torture/test_faults.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted(target: Path, *args: str) -> Iterator[None]:
    """``mount ARGS TARGET`` for the block; skips the test when this machine cannot mount
    (not root, or a container without CAP_SYS_ADMIN)."""
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'not permitted'}); "
                    "this fault needs root with CAP_SYS_ADMIN")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def small_disk(directory: Path, size: str) -> Iterator[None]:
    """A real filesystem of *size* (tmpfs) mounted at *directory* for the block."""
    directory.mkdir()
    with mounted(directory, "-t", "tmpfs", "-o", f"size={size}", "tmpfs"):
        yield


def fill(directory: Path, name: str = "filler") -> None:
    """Take every free byte of *directory*'s filesystem, as another program would."""
    free = shutil.disk_usage(directory).free
    with open(directory / name, "wb") as fh, contextlib.suppress(OSError):
        fh.write(bytes(free))


def without_dac(cmd: list[str]) -> list[str]:
    """*cmd* run so that file modes refuse: as root, without the capabilities that bypass
    them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); another user meets the modes anyway."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: root would bypass the file modes")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
            *cmd]
