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


def wait_until(condition: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> None:
    """Returns as soon as `condition()` is truthy; fails the test naming `what` after `timeout` s."""
    if not wait_for(condition, timeout, every):
        raise AssertionError(f"timed out waiting for {what}")
