"""`[privacy]`: what decisions carry off the device, and how long the gallery keeps a person.

Kept apart from `edge.config.tables` (which imports it) so the retention keys, their rule and
the parsing of the per-group defaults sit together. The device and the hub read the same table
(docs/privacy.md): both erase a person whose retention has run out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.config.rules import enforce, rule

RETENTION_FROM = ("enrollment", "last_seen")
MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    # false: decisions and door events leave the gallery with the person's uid only (MQTT, Home
    # Assistant, ZeroMQ, journald, printed lines, --events); true: with the display name too.
    # Erasure cannot reach a name that was sent (docs/config.md#privacy).
    show_names: bool = False
    # What a person's retention_days counts from: "enrollment" (the consent time) or
    # "last_seen" (their last grant, so a returning customer stays). docs/privacy.md.
    retention_from: str = field(default="enrollment", metadata={"choices": RETENTION_FROM})
    # Site-wide retention per group for persons enrolled without their own retention_days:
    # "group=days" items, e.g. ["kiosk-customers=365"]; a person in several takes the shortest.
    group_retention_days: tuple[str, ...] = ()
    # How often the daemon and `hub serve` look for persons whose retention or validity ended
    # (also when the daemon or `hub serve` starts, and whenever the daemon reopens the gallery).
    retention_sweep_s: float = field(default=3600.0, metadata={"min": 10.0, "max": 86400.0})

    def __post_init__(self) -> None:
        enforce(self, "privacy")

    def group_days(self) -> dict[str, int]:
        """{group: days} of `group_retention_days` (checked when the table was built)."""
        return {g.strip(): int(d) for g, _, d in (item.partition("=") for item in self.group_retention_days)}


@rule("privacy", "group_retention_days")
def _group_retention(p: Any, where: str) -> str | None:
    seen: set[str] = set()
    for item in p.group_retention_days:
        group, eq, days = item.partition("=")
        group, days = group.strip(), days.strip()
        if not eq or not group or not days.isdigit() or not 1 <= int(days) <= MAX_RETENTION_DAYS:
            return f"{where}.group_retention_days: {item!r} must be \"group=days\" with days in 1..{MAX_RETENTION_DAYS}"
        if group in seen:
            return f"{where}.group_retention_days: group {group!r} is listed twice"
        seen.add(group)
    return None
