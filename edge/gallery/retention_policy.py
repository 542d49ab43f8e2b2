"""When a person is due for erasure: `RetentionPolicy.due` (docs/privacy.md#retention).

Pure: a profile, times and `[privacy]` in, a reason out. The device (edge/gallery/retention.py)
and the hub (sync/hub/retention.py) compute deadlines with this one function, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import PrivacyConfig
from edge.gallery.records import PersonProfile

DAY_S = 86_400
REASONS = ("retention", "expired")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    basis: str = "enrollment"  # [privacy] retention_from
    group_days: tuple[tuple[str, int], ...] = ()  # [privacy] group_retention_days

    @classmethod
    def of(cls, privacy: PrivacyConfig) -> RetentionPolicy:
        return cls(privacy.retention_from, tuple(sorted(privacy.group_days().items())))

    def days(self, profile: PersonProfile) -> int | None:
        """The person's own retention, else the shortest of their groups' defaults, else None."""
        if profile.retention_days is not None:
            return profile.retention_days
        by_group = dict(self.group_days)
        found = [by_group[g] for g in profile.groups if g in by_group]
        return min(found) if found else None

    def due(self, profile: PersonProfile, created: int, last_seen: int | None, now: float, hub_held: bool = False) -> str | None:
        """"expired", "retention" or None (not due) for a person enrolled at `created`."""
        if profile.valid_until is not None and now > profile.valid_until:
            return "expired"
        days = self.days(profile)
        if days is None:
            return None
        start = profile.consent_at if profile.consent_at is not None else created
        if self.basis == "last_seen":
            if hub_held:
                return None  # only the hub sees every device's grants: its sweep decides
            start = max(start, last_seen or 0)
        return "retention" if now > start + days * DAY_S else None
