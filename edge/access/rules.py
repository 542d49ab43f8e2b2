"""Access rules: who may pass which door, when — the step between `decide` and the outputs.

A decision names a person; these rules say whether that person is let through *here, now*:
the person's own record (consent, validity window), then the door's (`[[door]]` in the
config): groups, a weekly schedule with holidays in the door's time zone, a minimum score,
liveness and challenge requirements, anti-passback per area, and the two-person rule.
Schedules are edge/access/schedule.py; the config load has already checked every door's keys.

`DoorRules.check` is the one stateful call: it is made once per decided track, and a grant
records the person's entry into the door's area (anti-passback) there and then, so a grant
that is reported is a grant that counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge.access.schedule import Schedule
from edge.config import DoorConfig
from edge.gallery.records import PersonProfile


@dataclass(frozen=True, slots=True)
class Candidate:
    """A matched person at a door: what the rules look at."""

    person_id: int
    person: str
    profile: PersonProfile
    score: float
    live: bool | None  # None: liveness is off
    challenge: str | None = None  # "passed" / "failed" / None (no challenge configured)
    # "card" / "pin": a credential chose the person and the face was verified 1:1 at the 1:1
    # threshold (the door's own min_score still applies); face False: a card alone at a
    # card_or_face door, with no face to score or to check for liveness.
    credential: str | None = None
    face: bool = True


def person_refusal(profile: PersonProfile, groups: tuple[str, ...], now: float) -> str | None:
    """Why the person's own record refuses them (consent, validity, groups), or None."""
    if not profile.consent:
        return "no_consent"
    if profile.valid_from is not None and now < profile.valid_from:
        return "not_yet_valid"
    if profile.valid_until is not None and now > profile.valid_until:
        return "expired"
    if groups and not set(groups) & set(profile.groups):
        return "not_in_groups"
    return None


class AreaRegister:
    """Anti-passback: the area each person last entered, and when. Shared by all doors."""

    def __init__(self) -> None:
        self._where: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def inside(self, person_id: int, area: str, now: float, timeout_s: float) -> bool:
        with self._lock:
            last = self._where.get(person_id)
        return last is not None and last[0] == area and now - last[1] < timeout_s

    def enter(self, person_id: int, area: str, now: float) -> None:
        with self._lock:
            self._where[person_id] = (area, now)

    def snapshot(self) -> dict[int, tuple[str, float]]:
        with self._lock:
            return dict(self._where)


class DoorRules:
    """The rules of one door. `check` answers None (grant) or the reason for a deny."""

    def __init__(self, door: DoorConfig, threshold: float, areas: AreaRegister | None = None) -> None:
        self.door = door
        self.schedule = Schedule.parse(door.schedule, door.holidays, door.holiday_schedule, door.timezone, f"door {door.name}")
        self.min_score = max(door.min_score, threshold) if door.min_score else threshold
        self.areas = areas or AreaRegister()
        self._waiting: dict[int, float] = {}  # two-person rule: first person's id -> time
        self._lock = threading.Lock()

    def check(self, c: Candidate, now: float) -> str | None:
        refused = person_refusal(c.profile, self.door.groups, now) or self._door_refusal(c, now)
        if refused is not None:
            return refused
        with self._lock:
            entering = [c.person_id]
            if self.door.two_person:
                self._waiting = {p: t for p, t in self._waiting.items() if now - t <= self.door.two_person_window_s}
                others = [p for p in self._waiting if p != c.person_id]
                if not others:
                    self._waiting[c.person_id] = now
                    return "two_person_pending"
                entering += others[:1]
                del self._waiting[others[0]]
            if self.door.area:
                for person_id in entering:
                    self.areas.enter(person_id, self.door.area, now)
        return None

    def _door_refusal(self, c: Candidate, now: float) -> str | None:
        if not self.schedule.open_at(now):
            return "outside_schedule"
        if c.face and c.score < (self.door.min_score if c.credential else self.min_score):
            return "score_below_door_minimum"
        if not c.face:
            return self._passback(c, now)
        if self.door.liveness_required and c.live is not True:
            # A spoof never gets here (decide turns it into `spoof`); this is liveness turned off.
            return "liveness_required"
        if self.door.challenge_required and c.challenge != "passed":
            return "challenge_required"
        return self._passback(c, now)

    def _passback(self, c: Candidate, now: float) -> str | None:
        if self.door.area and self.areas.inside(c.person_id, self.door.area, now, self.door.passback_s):
            return "passback"
        return None


# (person id, profile, now) -> "retention_expired" / "removed" / None: edge/gallery/retention.py
# `refusal` on the running gallery, so a person due for erasure is refused before the sweep comes.
RetentionCheck = Callable[[int, PersonProfile, float], str | None]


class CameraRules:
    """What a camera's decider asks: the door's rules when a door is on the camera, else only
    the person's record and the camera's groups (the behaviour without [[door]])."""

    def __init__(self, groups: tuple[str, ...], door: DoorRules | None = None, retention: RetentionCheck | None = None) -> None:
        self.groups = groups
        self.door = door
        self.retention = retention

    def check(self, c: Candidate, now: float) -> str | None:
        refused = person_refusal(c.profile, self.groups, now)
        if refused is None and self.retention is not None:
            refused = self.retention(c.person_id, c.profile, now)
        if refused is not None or self.door is None:
            return refused
        return self.door.check(c, now)

