"""Waiting for something another process or thread does, without timing assertions."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float, every: float = 0.05) -> bool:
    """True as soon as `predicate()` is truthy, False when `timeout` seconds passed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
