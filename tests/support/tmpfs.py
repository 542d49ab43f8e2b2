"""A small real file system to fill up: a tmpfs mounted for one test (root only).

The tests run as root here and in CI. Where mounting is not permitted (a rootless developer
machine, a container without CAP_SYS_ADMIN) a test using this is skipped, saying why — except
under CI=true, where it must run, so it fails instead."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = ".filler"


class SmallDisk:
    """A mounted tmpfs at `root`; `fill()` takes every free byte, `free()` gives it back."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def fill(self) -> None:
        fd = os.open(self.root / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:  # ENOSPC: on to smaller writes, down to the last byte
                    continue
        finally:
            os.close(fd)
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        (self.root / FILLER).unlink(missing_ok=True)


@contextmanager
def small_tmpfs(root: Path, size: str = "32m") -> Iterator[SmallDisk]:
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root)], capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs at {root} (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
