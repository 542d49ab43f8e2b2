"""Audit retention on the device: which records may be pruned, and when.

A record goes only when both hold: it is older than `[audit] retention_days`, and the hub has
acknowledged it — its signed anchor (seq, hash), checked by sync.control when the ack came, is at
or above the record. The pruned range always starts at the oldest record and stops at the first
one that is too young or not acknowledged, so what remains is one unbroken chain whose start the
checkpoint record names (edge.audit.checkpoint). The sync agent prunes after an accepted ack, at
most every `[audit] prune_interval_s` (`Pruner`); `facegate audit prune` does it by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.audit.anchor import AuditAnchor
from edge.audit.checkpoint import Checkpoint
from edge.audit.journal import AuditLog
from edge.config.audit import AuditConfig
from edge.errors import AuditError

DAY_US = 86_400 * 1_000_000
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PruneResult:
    pruned: int  # records deleted by this prune (0: nothing was due)
    upto: int  # the journal now starts after this seq (0: never pruned)
    checkpoint_seq: int | None  # the checkpoint record this prune appended

    def to_dict(self) -> dict[str, int | None]:
        return {"pruned": self.pruned, "upto": self.upto, "checkpoint_seq": self.checkpoint_seq}


def prunable_upto(log: AuditLog, anchor: AuditAnchor, retention_days: int, now_us: int) -> int:
    """The last seq a prune may delete now (0: none): below the retention cutoff and at or below
    the hub's anchor, whose hash must still be this journal's record there."""
    if retention_days <= 0:
        return 0
    record = log.record(anchor.seq)
    if record is None or record.hash != anchor.hash:
        raise AuditError(f"audit prune: the hub's anchor (record {anchor.seq}, {anchor.hash[:16]}…) is not this journal's record: nothing is pruned")
    upto = min(anchor.seq, log.older_run_end(now_us - retention_days * DAY_US))
    return upto if upto >= log.first_seq() else 0


def prune(log: AuditLog, anchor: AuditAnchor | None, retention_days: int, now_us: int | None = None) -> PruneResult:
    """Prunes what `prunable_upto` allows; `anchor` must be the hub's ack already checked (its
    signature, this device, its hash): without one, nothing is pruned."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    upto = 0 if anchor is None else prunable_upto(log, anchor, retention_days, now_us)
    record = log.prune(upto, anchor.ack) if upto and anchor is not None else None
    if record is None:
        current = log.checkpoint_record()
        return PruneResult(0, Checkpoint.of(current).pruned_upto if current else 0, None)
    checkpoint = Checkpoint.of(record)
    _LOG.info("audit journal: pruned %d record(s) up to %d (checkpoint record %d)", checkpoint.pruned, upto, record.seq)
    return PruneResult(checkpoint.pruned, upto, record.seq)


class Pruner:
    """Prunes after accepted acks, at most once per `prune_interval_s` (each prune is one more record)."""

    def __init__(self, log: AuditLog, cfg: AuditConfig, clock: Callable[[], float] = time.monotonic,
                 wall_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._log, self.cfg, self._clock, self._wall_us = log, cfg, clock, wall_us
        self._last: float | None = None

    def after_ack(self, anchor: AuditAnchor) -> PruneResult | None:
        if self.cfg.retention_days <= 0:
            return None
        now = self._clock()
        if self._last is not None and now - self._last < self.cfg.prune_interval_s:
            return None
        self._last = now
        try:
            return prune(self._log, anchor, self.cfg.retention_days, self._wall_us())
        except AuditError as exc:  # the records stay; the next interval tries again
            _LOG.error("%s", exc)
            return None
