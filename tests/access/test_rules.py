"""Access rules and door state: schedules across midnight and DST, holidays, anti-passback,
two-person rule, validity and revocation through the real decider and gallery, alarms and
failure modes."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.access.door_state import DoorMachine
from edge.access.rules import (
    AreaRegister,
    CameraRules,  # noqa: I001 - kept apart from the schedule imports
    Candidate,
    DoorRules,
)
from edge.access.schedule import Schedule, parse_window
from edge.config import CameraConfig, DecideConfig, DoorConfig, config_from_dict
from edge.errors import ConfigError
from edge.gallery.crypto import new_key
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.video.decide import Decider, Evidence, Sample
from edge.video.track import Track

BERLIN = "Europe/Berlin"


def at(text: str, tz: str = BERLIN) -> float:
    """'2026-12-25 23:59:59' in the zone `tz` as unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def utc(text: str) -> float:
    return at(text, "UTC")


def door(**kw: object) -> DoorConfig:
    return DoorConfig(**{"name": "d", "camera": "cam0", "timezone": BERLIN, "liveness_required": False, **kw})


def door_schedule(**kw: object) -> Schedule:
    d = door(**kw)
    return Schedule.parse(d.schedule, d.holidays, d.holiday_schedule, d.timezone)


def person(pid: int = 1, live: bool | None = True, score: float = 0.8, **profile: object) -> Candidate:
    return Candidate(pid, f"p{pid}", PersonProfile(name=f"p{pid}", **profile), score, live)


def test_overnight_window_runs_past_midnight_into_the_next_day_only() -> None:
    s = door_schedule(schedule=("fri 22:00-06:00",))
    # 2026-11-20 is a Friday.
    assert not s.open_at(at("2026-11-20 21:59:59"))
    assert s.open_at(at("2026-11-20 22:00:00"))
    assert s.open_at(at("2026-11-20 23:59:59"))
    assert s.open_at(at("2026-11-21 00:00:00"))
    assert s.open_at(at("2026-11-21 05:59:59"))
    assert not s.open_at(at("2026-11-21 06:00:00"))
    assert not s.open_at(at("2026-11-19 23:00:00"))  # Thursday night is not in it
    assert not s.open_at(at("2026-11-20 02:00:00"))  # nor the small hours of Friday


def test_whole_days_end_exactly_at_midnight() -> None:
    s = door_schedule(schedule=("mon-fri 00:00-24:00",))
    assert not s.open_at(at("2026-11-22 23:59:59"))  # Sunday
    assert s.open_at(at("2026-11-23 00:00:00"))  # Monday
    assert s.open_at(at("2026-11-27 23:59:59"))  # Friday
    assert not s.open_at(at("2026-11-28 00:00:00"))  # Saturday


def test_windows_keep_their_local_hours_across_dst_changes() -> None:
    morning = door_schedule(schedule=("sun 08:00-09:00",))
    # 2026-03-29: Berlin goes from +01:00 to +02:00 at 02:00. 06:30 UTC is 08:30 local (CEST);
    # a fixed winter offset would call it 07:30 and keep the door shut.
    assert morning.open_at(utc("2026-03-29 06:30:00"))
    assert not morning.open_at(utc("2026-03-29 07:00:00"))  # 09:00 CEST
    assert not morning.open_at(utc("2026-03-22 06:30:00"))  # a week earlier that is 07:30 CET
    # 2026-10-25: 02:00-03:00 happens twice (CEST, then CET); both are inside the window.
    night = door_schedule(schedule=("sun 02:00-03:00",))
    assert night.open_at(utc("2026-10-25 00:30:00"))  # 02:30 CEST
    assert night.open_at(utc("2026-10-25 01:30:00"))  # 02:30 CET
    assert not night.open_at(utc("2026-10-25 02:00:00"))  # 03:00 CET


def test_holidays_follow_their_own_windows() -> None:
    closed = door_schedule(schedule=("mon-fri 07:00-19:00",), holidays=("2026-12-25",))
    assert closed.open_at(at("2026-12-24 12:00:00"))
    assert not closed.open_at(at("2026-12-25 12:00:00"))  # a Friday, but a holiday
    short = door_schedule(schedule=("daily 22:00-06:00",), holidays=("2026-12-25",),
                          holiday_schedule=("daily 10:00-12:00",))
    assert short.open_at(at("2026-12-25 02:00:00"))  # the night that began on the 24th
    assert short.open_at(at("2026-12-25 11:00:00"))
    assert not short.open_at(at("2026-12-25 23:00:00"))
    assert short.open_at(at("2026-12-26 23:00:00"))


def test_bad_schedules_and_zones_are_refused_naming_the_key() -> None:
    for bad, key in [
        ({"schedule": ["mon-fri 7-19"]}, "door[0].schedule"),
        ({"schedule": ["someday 07:00-19:00"]}, "door[0].schedule"),
        ({"schedule": ["mon 07:00-24:01"]}, "door[0].schedule"),
        ({"holidays": ["25.12.2026"]}, "door[0].holidays"),
        ({"timezone": "Europe/Atlantis"}, "door[0].timezone"),
        ({"osdp": "pd"}, "door[0].osdp_port"),
        ({"relay_line": 3, "contact_line": 3}, "door[0]"),
    ]:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            config_from_dict({"door": [{"camera": "cam0", **bad}]})
    assert parse_window("sat,sun 09:00-13:00").days == frozenset({5, 6})
    assert parse_window("fri-mon 09:00-13:00").days == frozenset({4, 5, 6, 0})


def test_anti_passback_per_area_until_exit_or_timeout() -> None:
    areas = AreaRegister()
    into_lab = DoorRules(door(name="lab-in", area="lab", passback_s=600), 0.3, areas)
    out_of_lab = DoorRules(door(name="lab-out", area="outside", passback_s=600), 0.3, areas)
    t = at("2026-11-23 10:00:00")
    assert into_lab.check(person(1), t) is None
    assert into_lab.check(person(1), t + 5) == "passback"  # a card (face) handed back through
    assert into_lab.check(person(2), t + 5) is None  # someone else is not affected
    assert out_of_lab.check(person(1), t + 60) is None
    assert into_lab.check(person(1), t + 70) is None  # left, may come back in
    assert into_lab.check(person(1), t + 70 + 599) == "passback"
    assert into_lab.check(person(1), t + 70 + 601) is None  # timed anti-passback


def test_refusals_leave_no_passback_trace() -> None:
    rules = DoorRules(door(area="lab", liveness_required=True), 0.3)
    t = at("2026-11-23 10:00:00")
    assert rules.check(person(1, live=None), t) == "liveness_required"
    assert rules.check(person(1), t + 1) is None  # the refused attempt did not count as an entry


def test_door_policy_score_liveness_challenge_groups_schedule() -> None:
    t = at("2026-11-23 10:00:00")  # a Monday
    assert DoorRules(door(min_score=0.6), 0.3).check(person(score=0.55), t) == "score_below_door_minimum"
    assert DoorRules(door(min_score=0.6), 0.3).check(person(score=0.65), t) is None
    strict = DoorRules(door(liveness_required=True, challenge_required=True), 0.3)
    assert strict.check(person(live=None), t) == "liveness_required"
    assert strict.check(dataclasses.replace(person(), challenge="failed"), t) == "challenge_required"
    assert strict.check(dataclasses.replace(person(), challenge="passed"), t) is None
    staff = DoorRules(door(groups=("staff",)), 0.3)
    assert staff.check(person(groups=("visitors",)), t) == "not_in_groups"
    assert staff.check(person(groups=("staff",)), t) is None
    assert DoorRules(door(schedule=("sat 09:00-12:00",)), 0.3).check(person(), t) == "outside_schedule"


def test_two_person_rule_needs_two_different_people_within_the_window() -> None:
    rules = DoorRules(door(two_person=True, two_person_window_s=10, area="vault"), 0.3)
    t = at("2026-11-23 10:00:00")
    assert rules.check(person(1), t) == "two_person_pending"
    assert rules.check(person(1), t + 2) == "two_person_pending"  # the same face twice is one person
    assert rules.check(person(2), t + 4) is None
    assert rules.areas.inside(1, "vault", t + 5, 600) and rules.areas.inside(2, "vault", t + 5, 600)
    assert rules.check(person(3), t + 100) == "two_person_pending"
    assert rules.check(person(4), t + 111) == "two_person_pending"  # 3 waited too long


def test_validity_window_and_consent() -> None:
    rules = DoorRules(door(), 0.3)
    now = at("2026-11-23 10:00:00")
    assert rules.check(person(valid_until=int(now) - 1), now) == "expired"
    assert rules.check(person(valid_from=int(now) + 60), now) == "not_yet_valid"
    assert rules.check(person(consent=False), now) == "no_consent"
    assert rules.check(person(valid_from=int(now) - 60, valid_until=int(now) + 60), now) is None


# -- through the real decider and an encrypted gallery --------------------------------------

DIM = 32
MODEL = "edgeface_xxs_int8"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _decide(decider: Decider, track_id: int, embedding: np.ndarray) -> tuple[str, str, str | None]:
    ev = Evidence(None)
    ev.samples = [Sample(embedding, 0.9, True)] * 3
    ev.first_ok_t, ev.first_ok_mono = 0.0, time.monotonic()
    decider.evidence[track_id] = ev
    track = Track(track_id, (0.0, 0.0, 100.0, 100.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True)
    d = decider.decide(track)
    return d.decision, d.reason, d.person


def test_expired_and_revoked_people_are_not_granted_at_the_door(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ann, bob = _unit(rng.standard_normal(DIM)), _unit(rng.standard_normal(DIM))
    gallery = Gallery.open(tmp_path, new_key(), MODEL, DIM, threshold=0.5, create=True)
    gallery.enroll(PersonProfile("Ann", groups=("staff",)), [ann], [1.0])
    gallery.enroll(PersonProfile("Bob", groups=("staff",), valid_until=int(time.time()) - 3600), [bob], [1.0])
    cam = CameraConfig(name="cam0", source="x")
    rules = CameraRules(cam.groups, DoorRules(door(groups=("staff",), area="lab"), 0.5))
    decider = Decider(DecideConfig(), cam, gallery, {}, rules=rules)
    assert _decide(decider, 1, ann) == ("grant", "match", "Ann")
    assert _decide(decider, 2, bob) == ("deny", "expired", "Bob")
    assert _decide(decider, 3, ann) == ("deny", "passback", "Ann")
    assert gallery.remove("Ann")
    assert _decide(decider, 4, ann)[:2] == ("unknown", "no_match")  # revoked: not even recognised
    gallery.close()


# -- door state ------------------------------------------------------------------------------


def events(evs: list) -> list[str]:
    return [e.event for e in evs]


def test_grant_unlocks_for_the_open_time_then_relocks() -> None:
    m = DoorMachine(door(open_time_s=5), now=0.0)
    assert events(m.grant(1.0, {"person_uid": "a" * 32})) == ["unlocked"] and m.released
    m.frame(5.9)  # the camera keeps delivering
    assert events(m.tick(5.9)) == [] and m.released
    assert events(m.tick(6.0)) == ["locked"] and not m.released


def test_forced_and_held_open_alarms() -> None:
    m = DoorMachine(door(open_time_s=5, held_open_s=30), now=0.0)
    assert events(m.contact(True, 1.0)) == ["opened", "forced"]
    assert events(m.contact(False, 2.0)) == ["closed"]
    m.grant(10.0)
    assert events(m.contact(True, 11.0)) == ["opened"]  # opened with a grant: not forced
    assert "held_open" not in events(m.tick(40.9))
    assert events(m.tick(41.0)) == ["held_open"]
    assert events(m.tick(50.0)) == []  # reported once per opening
    assert m.state() == "held_open"
    assert events(m.contact(False, 51.0)) == ["closed"]


def test_fail_secure_keeps_the_door_locked_while_the_pipeline_is_blind() -> None:
    m = DoorMachine(door(fail="secure", unhealthy_after_s=5, open_time_s=60), now=0.0)
    m.grant(1.0)
    m.frame(1.0)
    assert events(m.tick(6.0)) == ["unhealthy", "locked"] and not m.released
    assert m.grant(7.0) == []  # a late grant cannot open a door the daemon cannot see
    m.frame(8.0)
    assert events(m.tick(8.0)) == ["healthy"] and not m.released


def test_fail_safe_releases_the_door_until_frames_return() -> None:
    m = DoorMachine(door(fail="safe", unhealthy_after_s=5), now=0.0)
    assert events(m.tick(4.9)) == []
    assert events(m.tick(5.0)) == ["unhealthy", "unlocked"] and m.released
    m.frame(9.0)
    assert events(m.tick(9.0)) == ["healthy", "locked"] and not m.released


def test_a_decision_carries_the_persons_id_uid_card_and_door(tmp_path: Path) -> None:
    """Nothing downstream looks a person up by name: the event has what outputs and audit need."""
    rng = np.random.default_rng(5)
    ann, eve = _unit(rng.standard_normal(DIM)), _unit(rng.standard_normal(DIM))
    gallery = Gallery.open(tmp_path, new_key(), MODEL, DIM, threshold=0.5, create=True)
    record = gallery.enroll(PersonProfile("Ann", groups=("staff",)), [ann], [1.0])
    cam = CameraConfig(name="cam0", source="x")
    front = door(groups=("staff",))
    decider = Decider(DecideConfig(), cam, gallery, {}, rules=CameraRules(cam.groups, DoorRules(front, 0.5)), target_fmr=1e-4)
    ev = Evidence(None)
    ev.samples = [Sample(ann, 0.9, True)] * 3
    ev.first_ok_t, ev.first_ok_mono = 0.0, time.monotonic()
    decider.evidence[5] = ev
    event = decider.decide(Track(5, (0.0, 0.0, 10.0, 10.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True))
    assert (event.decision, event.person, event.person_id, event.person_uid) == ("grant", "Ann", record.id, record.uid)
    assert (event.card, event.door, event.threshold, event.target_fmr) == (record.id, front.name, 0.5, None)
    audit = event.audit_body()
    assert audit["person_uid"] == record.uid and "Ann" not in repr(audit) and audit["door"] == front.name
    assert event.body is event.body  # built once, however many channels send it
    stranger = Evidence(None)
    stranger.samples = [Sample(eve, 0.9, True)] * 3
    stranger.first_ok_t, stranger.first_ok_mono = 0.0, time.monotonic()
    decider.evidence[6] = stranger
    unknown = decider.decide(Track(6, (0.0, 0.0, 10.0, 10.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True))
    assert (unknown.decision, unknown.person_id, unknown.person_uid, unknown.card) == ("unknown", None, None, None)
    gallery.close()
