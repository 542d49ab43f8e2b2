"""Bounded audit of refused inbound messages: a flood of forged messages must not grow the journal.

Every refused message used to be its own `rejected_message` audit record, so whoever can publish
on a device's topics could fill its disk (and the hub's audit table) at line rate. Now, per
(topic, error type), the first `burst` refusals of a window are recorded one by one — the
evidence an operator needs — and the rest are counted and written as one summary record when the
window ends (`suppressed`, first and last time, bytes, the last sha256). Nothing is dropped
unseen: the count is exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BURST = 10  # refusals per (topic, error) recorded one by one in a window
WINDOW_S = 60.0


@dataclass(slots=True)
class _Window:
    started: float
    recorded: int = 0
    suppressed: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    bytes: int = 0
    last_sha256: str = ""
    last_reason: str = ""


class RejectLimiter:
    """`record(topic, error, body)` writes or counts; `flush()` writes the summaries that are due."""

    def __init__(self, append: Callable[[str, dict[str, Any]], Any], burst: int = BURST, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._append, self.burst, self.window_s, self._clock = append, burst, window_s, clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def record(self, topic: str, error: str, body: dict[str, Any]) -> bool:
        """True when `body` was written as its own record, False when it was counted."""
        now = self._clock()
        key = (topic, error)
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.window_s:
            self._summarise(key, window)
            window = None
        if window is None:
            window = self._windows[key] = _Window(now)
        if window.recorded < self.burst:
            window.recorded += 1
            self._append("rejected_message", body)
            return True
        if not window.suppressed:
            window.first_ts = time.time()
        window.suppressed += 1
        window.last_ts = time.time()
        window.bytes += int(body.get("bytes", 0))
        window.last_sha256, window.last_reason = str(body.get("sha256", "")), str(body.get("reason", ""))
        return False

    def flush(self, force: bool = False) -> None:
        now = self._clock()
        for key, window in list(self._windows.items()):
            if force or now - window.started >= self.window_s:
                self._summarise(key, window)

    def _summarise(self, key: tuple[str, str], window: _Window) -> None:
        del self._windows[key]
        if window.suppressed:
            topic, error = key
            self._append("rejected_message", {
                "topic": topic, "error": error, "reason": window.last_reason[:500], "suppressed": window.suppressed,
                "first_ts": round(window.first_ts, 3), "last_ts": round(window.last_ts, 3), "bytes": window.bytes,
                "sha256": window.last_sha256,
            })
