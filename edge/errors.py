"""The error hierarchy every stage raises; the CLI prints these without a traceback."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path


class FacegateError(Exception):
    """Base of every error facegate reports to a user."""


class ConfigError(FacegateError):
    """A config file or key is wrong; the message names the key.

    `problems` holds every problem found, one line each starting with the dotted key; an error
    made from one message holds just that message.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)

    @classmethod
    def listing(cls, problems: Sequence[str], where: str = "") -> ConfigError:
        """One error for `problems`: the problem itself when there is one, else "<where>: N problems"
        and one indented line each."""
        prefix = f"{where}: " if where else ""
        if len(problems) == 1:
            return cls(prefix + problems[0], problems)
        return cls(f"{prefix}{len(problems)} problems" + "".join(f"\n  {p}" for p in problems), problems)


class ModelError(FacegateError):
    """A model file is missing, unbuilt, corrupt or does not match the manifest."""


class ImageError(FacegateError):
    """An input image cannot be read or decoded."""


class BackendError(FacegateError):
    """An inference backend (ONNX Runtime, TFLite) is unavailable or failed."""


class GalleryError(FacegateError):
    """The gallery file is missing, corrupt, or inconsistent with its keys."""


class PersonNameError(GalleryError):
    """A person's display name is refused (edge/names.py): empty, too long, or holding control characters."""


class KeyfileError(FacegateError):
    """A key file or credential is missing, unreadable, too widely readable, or the wrong key."""


class CryptoError(FacegateError):
    """A key or sealed record fails authentication: wrong key, or data altered or moved."""


class AuditError(FacegateError):
    """The audit journal or its signing key is unreadable, or a record cannot be written."""


class ProtocolError(FacegateError):
    """An MQTT sync message is malformed, unsigned, replayed or otherwise refused (see sync.protocol)."""


class LabelsError(FacegateError):
    """A labelled-data CSV is missing, malformed, or names files that cannot be found."""


class OutputError(FacegateError):
    """A door output (GPIO line, Wiegand, OSDP port, ZeroMQ endpoint) cannot be opened or driven."""


class ApiError(FacegateError):
    """A request on the ZeroMQ control socket is refused; `code` is the stable, documented name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Below this much free space a database that cannot be opened or written is taken to have run
# out of room: SQLite then reports "disk I/O error" (it cannot grow its -shm), not "disk full".
NEARLY_FULL_BYTES = 1024 * 1024


def storage_advice(path: Path | str, otherwise: str) -> str:
    """What to tell an operator about a database file that failed: free space when the file
    system holding it is (nearly) full — never "restore it from a backup" over a full disk."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return otherwise
    if free < NEARLY_FULL_BYTES:
        return f"the file system holding it is full ({free // 1024} KiB free): free space there"
    return otherwise
