"""Whole-or-nothing small files: the audit anchor, the hub keyrings, the device's own keys.

`write_atomic(path, data)`: a temporary sibling created 0600, fsynced, renamed over `path`, and
the directory fsynced, so a power cut leaves the old file or the new one, never half of one.
`write_new(path, data)`: the same, but linked into place, never over an existing file: a key
another process created meanwhile wins and ours is dropped (False).
OSError propagates: each caller names its file in its own typed error.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.gallery.crypto import fsync_dir


def _temporary(path: Path, data: bytes) -> Path:
    """`data` in a fsynced 0600 sibling of `path`, to be renamed or linked into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    os.replace(_temporary(path, data), path)
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes) -> bool:
    path = Path(path)
    tmp = _temporary(path, data)
    try:
        os.link(tmp, path)  # fails if the file exists: never replaces it
        written = True
    except FileExistsError:
        written = False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return written
