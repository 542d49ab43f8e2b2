"""One door's state: lock, contact, alarms and failure mode — a pure state machine.

Inputs are a grant, the door contact (open/closed) and the pipeline's health; time is passed
in, so tests drive it with a clock of their own and the outputs thread with time.monotonic().
`released` says whether the strike relay should be energised (the door unlocked) right now;
every change is returned as a `DoorEvent` for the event socket and the audit trail.

- a grant unlocks for `open_time_s`; the door relocks when that time is up (an open door
  then locks as soon as it closes — the strike holds the latch either way);
- the contact opening while the door is locked is `forced`; staying open longer than
  `held_open_s` is `held_open` (once per opening);
- no frame for `unhealthy_after_s`: `fail = "secure"` keeps (or makes) the door locked and
  ignores nothing else; `fail = "safe"` releases it until frames come back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.config import DoorConfig

# audit_unavailable / audit_restored come from the outputs (edge/outputs/doors.py), not this machine.
EVENTS = ("unlocked", "locked", "opened", "closed", "forced", "held_open", "unhealthy", "healthy", "audit_unavailable", "audit_restored")


@dataclass(frozen=True, slots=True)
class DoorEvent:
    door: str
    event: str  # one of EVENTS
    t: float  # the machine's clock (monotonic in the daemon)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"door": self.door, "event": self.event, **self.detail}


class DoorMachine:
    def __init__(self, cfg: DoorConfig, now: float) -> None:
        self.cfg = cfg
        self.unlock_until = 0.0
        self.is_open = False
        self.opened_at = 0.0
        self.held_reported = False
        self.healthy = True
        self.last_frame = now  # a starting pipeline gets unhealthy_after_s to deliver
        self._was_released = False

    @property
    def released(self) -> bool:
        """Should the strike be energised (door unlocked) now — as of the last call."""
        return self._was_released

    def state(self) -> str:
        if self.is_open:
            return "held_open" if self.held_reported else "open"
        return "unlocked" if self._was_released else "locked"

    def grant(self, now: float, person: Mapping[str, Any] | None = None) -> list[DoorEvent]:
        """`person`: the grant's `DecisionEvent.person_out()` (uid, and the name only where
        [privacy] show_names lets it out), copied into the `unlocked` event's detail."""
        if not self.healthy and self.cfg.fail == "secure":
            # Cannot happen from a live pipeline (no frames, no decisions); a stale grant
            # delivered late must not open a door the daemon considers blind.
            return []
        self.unlock_until = max(self.unlock_until, now + self.cfg.open_time_s)
        return self._settle(now, {"reason": "grant", **(person or {})})

    def frame(self, now: float) -> None:
        self.last_frame = now

    def contact(self, is_open: bool, now: float) -> list[DoorEvent]:
        if is_open == self.is_open:
            return []
        self.is_open = is_open
        events = []
        if is_open:
            self.opened_at, self.held_reported = now, False
            events.append(DoorEvent(self.cfg.name, "opened", now))
            if not self._was_released:
                events.append(DoorEvent(self.cfg.name, "forced", now))
        else:
            events.append(DoorEvent(self.cfg.name, "closed", now, {"open_s": round(now - self.opened_at, 3)}))
        return events

    def tick(self, now: float) -> list[DoorEvent]:
        events: list[DoorEvent] = []
        healthy = now - self.last_frame < self.cfg.unhealthy_after_s
        if healthy != self.healthy:
            self.healthy = healthy
            detail = {"fail": self.cfg.fail, "no_frame_s": round(now - self.last_frame, 3)}
            events.append(DoorEvent(self.cfg.name, "healthy" if healthy else "unhealthy", now, detail))
            if not healthy and self.cfg.fail == "secure":
                self.unlock_until = 0.0
        if self.is_open and not self.held_reported and now - self.opened_at >= self.cfg.held_open_s:
            self.held_reported = True
            events.append(DoorEvent(self.cfg.name, "held_open", now, {"open_s": round(now - self.opened_at, 3)}))
        return events + self._settle(now, {"reason": "timer"})

    def _settle(self, now: float, why: dict[str, Any]) -> list[DoorEvent]:
        released = now < self.unlock_until or (not self.healthy and self.cfg.fail == "safe")
        if released == self._was_released:
            return []
        self._was_released = released
        if not self.healthy:
            why = {"reason": f"fail_{self.cfg.fail}"}
        return [DoorEvent(self.cfg.name, "unlocked" if released else "locked", now, why)]
