"""Login attempts limited per user name and per client address (a password guesser is slowed on
one account from many addresses, and on many accounts from one address).

Failures are counted in a sliding window; once a key has `limit` failures in it, every attempt
for that key is refused without checking the password until the oldest failure leaves the
window. A success clears its user's count (not its address's: one good password must not
reset a guesser's budget on other accounts). Kept in memory, per hub instance.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class LoginLimiter:
    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self._clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._told: dict[tuple[str, str, str], float] = {}  # refusals recorded lately (see `record_refusal`)
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        times = self._fails.setdefault(key, deque())
        cutoff = self._clock() - self.window_s
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def allowed(self, user: str, address: str) -> bool:
        with self._lock:
            return len(self._recent("u:" + user)) < self.per_user and len(self._recent("a:" + address)) < self.per_address

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent("u:" + user).append(now)
            self._recent("a:" + address).append(now)
            if len(self._fails) > 100_000:  # a flood of made-up names: drop the empty windows
                self._fails = {k: v for k, v in self._fails.items() if self._recent(k)}

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._fails.pop("u:" + user, None)

    def record_refusal(self, why: str, user: str, address: str, every_s: float = 60.0) -> bool:
        """Whether to write this refusal to hub_audit: once a minute per (why, user, address), so
        a client hammering a locked account or posting junk cannot grow the log without bound."""
        with self._lock:
            now = self._clock()
            key = (why, user, address)
            if now - self._told.get(key, -every_s) < every_s:
                return False
            if len(self._told) > 100_000:
                self._told = {k: t for k, t in self._told.items() if now - t < every_s}
            self._told[key] = now
            return True
