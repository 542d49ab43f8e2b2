"""Access rules: who may pass which door, when — the step between `decide` and the outputs.

A decision names a person; these rules say whether that person is let through *here, now*:
the person's own record (consent, validity window), then the door's (`[[door]]` in the
config): groups, a weekly schedule with holidays in the door's time zone, a minimum score,
liveness and challenge requirements, anti-passback per area, and the two-person rule.

Schedules are wall-clock windows ("mon-fri 07:00-19:00") evaluated with zoneinfo, so a
window means the same local hours on both sides of a DST change. A window whose end is not
after its start runs past midnight and belongs to the day it starts on ("fri 22:00-06:00" is
Friday night into Saturday morning).

`DoorRules.check` is the one stateful call: it is made once per decided track, and a grant
records the person's entry into the door's area (anti-passback) there and then, so a grant
that is reported is a grant that counted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config import DoorConfig
from edge.errors import ConfigError
from edge.gallery.records import PersonProfile

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_GROUPS = {"daily": tuple(range(7)), "weekdays": tuple(range(5)), "weekends": (5, 6)}
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # weekdays the window starts on, 0 = Monday
    start: int  # seconds after local midnight
    end: int  # seconds after local midnight (86400 = 24:00); end <= start runs past midnight

    @property
    def overnight(self) -> bool:
        return self.end <= self.start


def _clock(text: str, where: str) -> int:
    hh, sep, mm = text.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ConfigError(f"{where}: time {text!r} must be HH:MM")
    seconds = int(hh) * 3600 + int(mm) * 60
    if int(mm) > 59 or seconds > DAY_S:
        raise ConfigError(f"{where}: time {text!r} is not between 00:00 and 24:00")
    return seconds


def _days(text: str, where: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        if part in _DAY_GROUPS:
            days.update(_DAY_GROUPS[part])
            continue
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ConfigError(f"{where}: days {part!r} must be mon..sun, a range like mon-fri, daily, weekdays or weekends")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        # "fri-mon" wraps over the weekend.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def parse_window(text: str, where: str = "schedule") -> Window:
    """ "mon-fri 07:00-19:00", "sat,sun 09:00-13:00", "daily 22:00-06:00", "weekdays 00:00-24:00"."""
    parts = text.lower().split()
    if len(parts) != 2 or "-" not in parts[1]:
        raise ConfigError(f"{where}: {text!r} must look like 'mon-fri 07:00-19:00'")
    start, end = parts[1].split("-", 1)
    window = Window(_days(parts[0], where), _clock(start, where), _clock(end, where))
    if window.start == DAY_S:
        raise ConfigError(f"{where}: {text!r} cannot start at 24:00")
    return window


def parse_zone(name: str, where: str = "timezone") -> tzinfo | None:
    """None = the system's local time (the C library applies its DST rules)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')") from exc


def _parse_date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: holiday {text!r} must be YYYY-MM-DD") from exc


class Schedule:
    """Weekly windows in one time zone, with holidays that follow their own windows."""

    def __init__(self, windows: tuple[Window, ...], holidays: frozenset[date] = frozenset(),
                 holiday_windows: tuple[Window, ...] = (), tz: tzinfo | None = None) -> None:
        self.windows = windows
        self.holidays = holidays
        self.holiday_windows = holiday_windows
        self.tz = tz

    @classmethod
    def from_door(cls, door: DoorConfig, where: str = "door") -> Schedule:
        # No schedule = always open on ordinary days; holidays still follow holiday_schedule.
        texts = door.schedule or ("daily 00:00-24:00",)
        return cls(
            tuple(parse_window(t, f"{where}.schedule") for t in texts),
            frozenset(_parse_date(d, f"{where}.holidays") for d in door.holidays),
            tuple(parse_window(t, f"{where}.holiday_schedule") for t in door.holiday_schedule),
            parse_zone(door.timezone, f"{where}.timezone"),
        )

    def _starting_on(self, day: date) -> tuple[Window, ...]:
        if day in self.holidays:
            return self.holiday_windows
        return tuple(w for w in self.windows if day.weekday() in w.days)

    def open_at(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self.tz)
        now = local.hour * 3600 + local.minute * 60 + local.second
        today = local.date()
        for w in self._starting_on(today):
            if w.start <= now < (DAY_S if w.overnight else w.end):
                return True
        return any(w.overnight and now < w.end for w in self._starting_on(today - timedelta(days=1)))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A matched person at a door: what the rules look at."""

    person_id: int
    person: str
    profile: PersonProfile
    score: float
    live: bool | None  # None: liveness is off
    challenge: str | None = None  # "passed" / "failed" / None (no challenge configured)


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
        self.schedule = Schedule.from_door(door, f"door {door.name}")
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
        if c.score < self.min_score:
            return "score_below_door_minimum"
        if self.door.liveness_required and c.live is not True:
            # A spoof never gets here (decide turns it into `spoof`); this is liveness turned off.
            return "liveness_required"
        if self.door.challenge_required and c.challenge != "passed":
            return "challenge_required"
        if self.door.area and self.areas.inside(c.person_id, self.door.area, now, self.door.passback_s):
            return "passback"
        return None


class CameraRules:
    """What a camera's decider asks: the door's rules when a door is on the camera, else only
    the person's record and the camera's groups (the behaviour without [[door]])."""

    def __init__(self, groups: tuple[str, ...], door: DoorRules | None = None) -> None:
        self.groups = groups
        self.door = door

    def check(self, c: Candidate, now: float) -> str | None:
        refused = person_refusal(c.profile, self.groups, now)
        if refused is not None or self.door is None:
            return refused
        return self.door.check(c, now)


def check_door(where: str, door: DoorConfig) -> None:
    """Config-time validation of what only this module knows how to parse."""
    if not door.camera:
        raise ConfigError(f"{where}.camera: required (the camera whose decisions open this door)")
    Schedule.from_door(door, where)
    if door.osdp and not door.osdp_port:
        raise ConfigError(f"{where}.osdp_port: required with {where}.osdp = {door.osdp!r}")
    if (door.wiegand_d0_line < 0) != (door.wiegand_d1_line < 0):
        raise ConfigError(f"{where}.wiegand_d1_line: Wiegand needs both D0 and D1 lines (or neither)")
    lines = [n for n in (door.relay_line, door.contact_line, door.wiegand_d0_line, door.wiegand_d1_line) if n >= 0]
    if len(set(lines)) != len(lines):
        raise ConfigError(f"{where}: relay, contact and Wiegand lines must be different GPIO lines (got {lines})")

