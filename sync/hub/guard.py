"""What stands between a device topic and the hub's handlers: size bounds, alert coalescing, resync pacing.

Whoever can publish on a device's topics can send the hub anything, as fast as the broker lets
them. Three rules keep that harmless:
- **Bounded before parsed.** Each leaf has a payload limit far above what a device sends
  (`MAX_BYTES`); a bigger payload is refused before JSON parsing, an unknown leaf is ignored.
- **Alerts coalesced.** Every refused message is an alert, but per (device, leaf, error) only the
  first `BURST` of a minute are stored one by one; the rest are counted into one summary alert
  (the same scheme as the device's refused-message records, `sync.rejects`).
- **Resyncs paced.** A resync request makes the hub build, sign and publish a full bundle; per
  scope at most one is answered every `[hub] resync_min_interval_s`. A request inside that window
  is not dropped: it is remembered and answered when the window ends (`ResyncPacer.due`), so an
  honest device behind a flood still gets its bundle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sync import protocol
from sync.protocol import PayloadTooLargeError
from sync.rejects import RejectLimiter

BURST = 5  # alerts per (device, leaf, error) stored one by one in a minute
MAX_BYTES: dict[str, int] = {
    protocol.STATUS: 64 * 1024,
    protocol.GALLERY_ACK: 16 * 1024,
    protocol.RESYNC: 4 * 1024,
    protocol.REPORT_STATUS: 4 * 1024,
    protocol.ENROLL: 8 * 1024 * 1024,  # 16 persons (one per model) of up to a few hundred templates
    protocol.AUDIT: 32 * 1024 * 1024,  # up to [sync] batch = 5000 records
}


def check_size(leaf: str, payload: bytes) -> None:
    limit = MAX_BYTES.get(leaf, 64 * 1024)
    if len(payload) > limit:
        raise PayloadTooLargeError(f"{leaf}: {len(payload)} bytes, above the {limit}-byte bound for this message")


class AlertLimiter:
    """`alert(device, leaf, exc)` stores or counts; `flush()` stores the summaries that are due."""

    def __init__(self, store_alert: Callable[[str, str], None], window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store_alert = store_alert
        self._limiter = RejectLimiter(self._write, BURST, window_s, clock)

    def _write(self, _kind: str, body: dict[str, Any]) -> None:
        device, leaf = body["topic"].split("/", 1)
        if "suppressed" in body:
            text = f"{leaf}: {body['suppressed']} more refused ({body['error']}) in the last minute, {body['bytes']} bytes; last: {body['reason']}"
        else:
            text = f"{leaf}: {body['reason']}"
        self._store_alert(device, text)

    def alert(self, device: str, leaf: str, exc: Exception, size: int = 0) -> bool:
        """True when stored as its own alert, False when counted into the next summary."""
        body = {"topic": f"{device}/{leaf}", "error": type(exc).__name__, "reason": str(exc)[:500], "bytes": size}
        return self._limiter.record(f"{device}/{leaf}", type(exc).__name__, body)

    def flush(self, force: bool = False) -> None:
        self._limiter.flush(force)


class ResyncPacer:
    """At most one answered resync per scope per `interval_s` — per scope and device when each
    device gets an answer of its own (a catch-up, `sync.hub.catch_up`); later ones wait, none is lost."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._last: dict[tuple[str, str], float] = {}
        self._waiting: dict[tuple[str, str], str] = {}  # (scope, device or "") → a device that asked while paced
        self.deferred = 0  # requests folded into a waiting answer (a flood shows here)

    def request(self, scope: str, device: str, per_device: bool = False) -> bool:
        """True: answer now. False: remembered, `due()` returns it once the window has passed."""
        key, now = (scope, device if per_device else ""), self._clock()
        last = self._latest(key)
        if last is None or now - last >= self.interval_s:
            self._last[key] = now
            self._waiting.pop(key, None)
            return True
        if key in self._waiting:
            self.deferred += 1
        self._waiting[key] = device
        return False

    def due(self) -> list[tuple[str, str]]:
        """(scope, device) pairs whose window has passed: answer them now."""
        now = self._clock()
        keys = [key for key in self._waiting if now - (self._latest(key) or 0.0) >= self.interval_s]
        out = [(key[0], self._waiting.pop(key)) for key in keys]
        for key in keys:
            self._last[key] = now
        return out

    def _latest(self, key: tuple[str, str]) -> float | None:
        """The last answer that counts for `key`: a full bundle to the whole scope also answered
        every member (else a flood's first request, answered with one, would let the second
        through at once as a catch-up)."""
        times = [t for t in (self._last.get(key), self._last.get((key[0], ""))) if t is not None]
        return max(times) if times else None
