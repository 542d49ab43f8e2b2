"""`[audit]`: how long the device's audit journal keeps records (docs/audit.md#retention).

Kept apart from `edge.config.tables` (which imports it; that module is at the size limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_AUDIT_RETENTION_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class AuditConfig:
    # Records older than this many days are pruned once the hub has acknowledged them (its signed
    # anchor covers them); a signed checkpoint record keeps the pruned chain's head. 0 = keep all.
    retention_days: int = field(default=0, metadata={"min": 0, "max": MAX_AUDIT_RETENTION_DAYS})
    # The sync agent prunes at most this often (each prune appends one checkpoint record).
    prune_interval_s: float = field(default=3600.0, metadata={"min": 60.0, "max": 7 * 86400.0})
