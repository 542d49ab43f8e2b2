"""Whether the audit journal takes records right now: one `AuditHealth` per journal.

A door with `require_audit` (the default) opens only on a grant whose decision record was
written, so a full disk keeps it locked; that must be loud, not a log line among thousands. The
journal reports every append here (`AuditLog.append`); the first failure of an outage is logged
as an error, the first success after it as a warning; /metrics shows `facegate_audit_writable`
and `facegate_audit_write_failures_total`, and the doors count the grants they refused
(`facegate_door_grants_refused_total`). The state follows the last write attempt: after space
comes back, the next record of any kind (a decision, a door event, a sync acknowledgement) clears it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

_LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class AuditHealth:
    where: str = "audit journal"
    writable: bool = True
    failures: int = 0  # appends that failed, ever
    down_since: float | None = None  # wall time of the first failure of the current outage
    last_error: str = ""
    refused_grants: Counter[str] = field(default_factory=Counter)  # door name -> grants kept locked for want of a record
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, error: Exception) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = str(error)[:300]
            first = self.writable
            self.writable = False
            if first:
                self.down_since = time.time()
        if first:
            _LOG.error("audit journal unwritable: %s; decisions are not acted on and doors with require_audit stay locked until it can be written", error)

    def succeeded(self) -> None:
        if self.writable:  # the common case: no lock on the decision path
            return
        with self._lock:
            was_down, since = not self.writable, self.down_since
            self.writable, self.down_since = True, None
        if was_down:
            _LOG.warning("%s is writable again after %.0f s", self.where, time.time() - (since or time.time()))

    def refused(self, door: str) -> None:
        with self._lock:
            self.refused_grants[door] += 1

    def refused_by_door(self) -> dict[str, int]:
        """A copy for another thread (a /metrics scrape) while the doors count on."""
        with self._lock:
            return dict(self.refused_grants)
