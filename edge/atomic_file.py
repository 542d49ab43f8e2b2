"""Whole-or-nothing small files: the audit anchor, the device's hub keyring.

`write_atomic(path, data)`: a temporary sibling created 0600, fsynced, renamed over `path`, and
the directory fsynced, so a power cut leaves the old file or the new one, never half of one.
OSError propagates: each caller names its file in its own typed error.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.gallery.crypto import fsync_dir


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
