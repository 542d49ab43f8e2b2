"""Door schedules: weekly wall-clock windows in a time zone, with holidays.

Schedules are wall-clock windows ("mon-fri 07:00-19:00") evaluated with zoneinfo, so a
window means the same local hours on both sides of a DST change. A window whose end is not
after its start runs past midnight and belongs to the day it starts on ("fri 22:00-06:00" is
Friday night into Saturday morning).

Plain values in, plain values out: the config check (edge/config) parses a door's keys with
the same functions the access rules (edge/access/rules.py) build their `Schedule` with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.errors import ConfigError

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


def parse_date(text: str, where: str = "holidays") -> date:
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
    def parse(cls, schedule: tuple[str, ...] = (), holidays: tuple[str, ...] = (),
              holiday_schedule: tuple[str, ...] = (), timezone: str = "", where: str = "door") -> Schedule:
        """A door's `schedule`, `holidays`, `holiday_schedule` and `timezone` keys; errors name `where`."""
        # No schedule = always open on ordinary days; holidays still follow holiday_schedule.
        return cls(
            tuple(parse_window(t, f"{where}.schedule") for t in schedule or ("daily 00:00-24:00",)),
            frozenset(parse_date(d, f"{where}.holidays") for d in holidays),
            tuple(parse_window(t, f"{where}.holiday_schedule") for t in holiday_schedule),
            parse_zone(timezone, f"{where}.timezone"),
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
