"""Step-up when unsure: a track whose liveness is uncertain at its door is asked for a challenge,
decided after it (liveness passed) or `spoof` when it times out, the track ends first or another
face does the challenge. Per-frame cues are synthetic FaceMesh points with a chosen eye aspect
ratio and yaw; the liveness score is fixed, so only the step-up logic is under test."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.access.rules import CameraRules, DoorRules
from edge.config import CameraConfig, DecideConfig, DoorConfig, LivenessConfig
from edge.config.load import config_from_dict
from edge.errors import ConfigError
from edge.gallery.crypto import new_key
from edge.gallery.search import Gallery, PersonProfile
from edge.perception import landmarks as lm
from edge.perception.detect import Detection
from edge.perception.faces import Face
from edge.perception.landmarks import FaceMesh
from edge.perception.liveness import cues
from edge.perception.liveness.checker import LivenessResult
from edge.perception.quality import Quality
from edge.video.challenge import StepUpPolicy, default_band, draw_steps
from edge.video.decide import Decider
from edge.video.track import Track

DIM = 32
OPEN, CLOSED = 0.28, 0.08
FPS = 25.0
BAD = Quality(0.2, 60.0, 100.0, 50.0, 0.0, 120.0, 0.0, ("yaw",))


class FixedTrack:
    def __init__(self, score: float) -> None:
        self.score, self.frames = score, 0

    def add(self, image: np.ndarray, face: Face, ts: float) -> None:
        self.frames += 1

    def result(self) -> LivenessResult:
        return LivenessResult(self.score, self.score >= 0.5, 0.5, {"passive": self.score}, self.frames)


class FixedLiveness:
    """Every track scores `score` (the checker's own interface: threshold, cfg, new_track)."""

    threshold = 0.5
    cfg = LivenessConfig()

    def __init__(self, score: float) -> None:
        self.score = score

    def new_track(self) -> FixedTrack:
        return FixedTrack(self.score)


def mesh(ear: float, yaw: float) -> FaceMesh:
    """FaceMesh points whose eye aspect ratio is `ear` and yaw `yaw` degrees (cues.py's measures)."""
    p = np.zeros((468, 3), np.float32)
    for eye, (outer, inner) in zip(cues._EYES, ((30.0, 50.0), (90.0, 70.0)), strict=True):
        o, u1, u2, i, l2, l1 = eye
        width = abs(inner - outer)
        gap = ear * width
        a, b = outer + (inner - outer) / 3, outer + 2 * (inner - outer) / 3
        p[o, :2], p[i, :2] = (outer, 50.0), (inner, 50.0)
        p[u1, :2], p[l1, :2] = (a, 50.0 - gap / 2), (a, 50.0 + gap / 2)
        p[u2, :2], p[l2, :2] = (b, 50.0 - gap / 2), (b, 50.0 + gap / 2)
    p[lm.NOSE_TIP, :2] = (60.0 + 30.0 * 0.95 * math.tan(math.radians(yaw)), 70.0)
    return FaceMesh(p, 1.0)


def face(embedding: np.ndarray, ear: float = OPEN, yaw: float = 0.0) -> Face:
    quality = Quality(0.9, 60.0, 100.0, yaw, 0.0, 120.0, 0.0, ())
    det = Detection((0.0, 0.0, 100.0, 100.0), np.zeros((6, 2), np.float32), 0.9)
    return Face(det, mesh(ear, yaw), None, quality, embedding)  # type: ignore[arg-type]  # no chip needed here


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def ann(tmp_path: Path):
    embedding = unit(11)
    gallery = Gallery.open(tmp_path, new_key(), "edgeface_xxs_int8", DIM, threshold=0.5, create=True)
    gallery.enroll(PersonProfile("Ann"), [embedding], [1.0])
    yield gallery, embedding
    gallery.close()


class Door:
    """A decider at door `front` (or, `at_door` False, a camera without a door) with one track
    (id 7) fed frame by frame on a 25 fps clock; due after two good frames (`[decide]` defaults)."""

    def __init__(self, gallery: Gallery, score: float, at_door: bool = True, decide: DecideConfig | None = None,
                 **policy: object) -> None:
        rules = CameraRules((), DoorRules(DoorConfig(name="front", camera="door", **policy), gallery.threshold)) if at_door else None
        self.decider = Decider(decide or DecideConfig(), CameraConfig(name="door", source="x"), gallery, {},
                               liveness=FixedLiveness(score), rules=rules)
        self.track = Track(7, (0.0, 0.0, 100.0, 100.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True)
        self.t = 0.0
        self.asked: list = []

    def frames(self, *faces: Face) -> list:
        """Each face one frame: observe, then what the pipeline does when the track is due."""
        decided = []
        for f in faces:
            self.t += 1.0 / FPS
            self.decider.observe(self.track, f, np.zeros((4, 4, 3), np.uint8), self.t, time.monotonic())
            if self.decider.due(self.track, self.t):
                asked = self.decider.step_up(self.track, self.t)
                if asked is None:
                    decided.append(self.decider.decide(self.track))
                else:
                    self.asked.append(asked)
        return decided

    def still(self, embedding: np.ndarray, n: int) -> list:
        return self.frames(*[face(embedding)] * n)


def blink(embedding: np.ndarray) -> list[Face]:
    return [face(embedding, e) for e in (OPEN, OPEN, CLOSED, CLOSED, OPEN, OPEN)]


def test_an_uncertain_track_is_asked_then_granted_after_a_blink(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="blink", liveness_challenge_timeout_ms=3000.0)
    assert door.still(emb, 3) == []  # due at the second good frame: asked, not decided
    (asked,) = door.asked
    assert (asked.track_id, asked.door, asked.challenge, asked.timeout_ms) == (7, "front", "blink", 3000.0)
    assert asked.band == (0.5, pytest.approx(0.95)) and asked.score == 0.7
    assert asked.deadline == pytest.approx(asked.ts + 3.0)
    assert "person" not in asked.body and "person_uid" not in asked.body  # nobody is named before the decision
    assert door.still(emb, 10) == []  # open eyes: still waiting
    (decision,) = door.frames(*blink(emb))
    assert (decision.decision, decision.person, decision.reason) == ("grant", "Ann", "match")
    step = decision.liveness.step_up
    assert decision.liveness.live and (step.outcome, step.observed, step.challenge_id) == ("passed", "blink", asked.challenge_id)
    # The audit record carries it.
    assert decision.audit_body()["liveness"]["step_up"]["outcome"] == "passed"
    assert len(door.asked) == 1 and not door.decider.due(door.track, door.t + 10)


def test_a_head_turn_passes_a_turn_challenge_and_a_blink_does_not(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="turn")
    door.still(emb, 3)
    assert door.frames(*blink(emb)) == []
    (decision,) = door.frames(*[face(emb, yaw=y) for y in (0, 6, 12, 18, 24)])
    assert decision.decision == "grant" and decision.liveness.step_up.observed == "turn"


def test_any_takes_either_cue_and_both_needs_each(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="any")
    door.still(emb, 3)
    (decision,) = door.frames(*blink(emb))
    assert decision.liveness.step_up.observed == "blink"
    door = Door(gallery, 0.7)  # the default: both, a drawn sequence
    door.still(emb, 3)
    (asked,) = door.asked
    assert asked.challenge == "both" and asked.body["steps"] == list(asked.steps)
    first, second = asked.steps
    assert door.frames(*do(first, emb)) == []
    (decision,) = door.frames(*do(second, emb))
    assert decision.decision == "grant" and decision.liveness.step_up.observed == f"{first}+{second}"


def do(step: str, embedding: np.ndarray) -> list[Face]:
    """Frames showing one step of a drawn sequence (the person's left: yaw rising)."""
    if step == "blink":
        return blink(embedding)
    sign = 1.0 if step == "turn_left" else -1.0
    return [face(embedding, yaw=sign * y) for y in (0, 8, 16, 24)]


def test_both_draws_the_order_and_the_turns_direction_per_track() -> None:
    drawn = Counter(draw_steps("both") for _ in range(200))
    # Four sequences, each about a quarter of the draws (missing one in 200: 4 x 0.75^200).
    assert set(drawn) == {("turn_left", "blink"), ("blink", "turn_left"), ("turn_right", "blink"), ("blink", "turn_right")}
    assert draw_steps("turn") == draw_steps("blink") == draw_steps("any") == ()


@pytest.mark.parametrize("steps", [("turn_left", "blink"), ("blink", "turn_right")])
def test_a_replay_that_shows_the_cues_in_another_order_or_direction_fails_both(ann, monkeypatch, steps) -> None:
    # A replayed clip shows its own footage whatever is asked: here a turn then a blink.
    gallery, emb = ann
    monkeypatch.setattr("edge.video.challenge.draw_steps", lambda _challenge: steps)
    footage = [*do("turn_right", emb), *blink(emb)]
    door = Door(gallery, 0.7, liveness_challenge_timeout_ms=1000.0)
    door.still(emb, 3)
    assert door.asked[0].steps == steps
    door.frames(*footage)
    (decision,) = door.still(emb, 40)
    assert (decision.decision, decision.reason) == ("spoof", "challenge_timeout")
    # The footage that happens to match the draw passes.
    monkeypatch.setattr("edge.video.challenge.draw_steps", lambda _challenge: ("turn_right", "blink"))
    door = Door(gallery, 0.7)
    door.still(emb, 3)
    (decision,) = door.frames(*footage)
    assert decision.decision == "grant" and decision.liveness.step_up.observed == "turn_right+blink"


def test_a_blink_during_the_turn_step_or_a_fast_swing_does_not_count(ann, monkeypatch) -> None:
    gallery, emb = ann
    monkeypatch.setattr("edge.video.challenge.draw_steps", lambda _challenge: ("turn_left", "blink"))
    door = Door(gallery, 0.7, liveness_challenge_timeout_ms=1000.0)
    door.still(emb, 3)
    # Blinks first (before its step), then turns: the blink step has seen no blink yet.
    assert door.frames(*blink(emb), *do("turn_left", emb)) == []
    # The eye ratio dips while the head swings back 24 -> -6 degrees: the turn, not the lids.
    swing = [face(emb, e, y) for e, y in ((OPEN, 24), (OPEN, 20), (CLOSED, 10), (CLOSED, 0), (OPEN, -6), (OPEN, -6))]
    assert door.frames(*swing) == []
    (decision,) = door.still(emb, 40)
    assert (decision.decision, decision.reason) == ("spoof", "challenge_timeout")


class DroppingTrack(FixedTrack):
    """A score that falls to `later` from frame `after` on: the weakest window of a replay seen
    clearly while it does what the challenge asks."""

    def __init__(self, score: float, later: float, after: int) -> None:
        super().__init__(score)
        self.later, self.after = later, after

    def result(self) -> LivenessResult:
        score = self.later if self.frames >= self.after else self.score
        return LivenessResult(score, score >= 0.5, 0.5, {"passive": score}, self.frames)


def test_a_cue_done_while_the_score_falls_below_the_band_is_not_a_pass(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="blink")
    dropping = FixedLiveness(0.7)
    dropping.new_track = lambda: DroppingTrack(0.7, 0.02, 6)  # type: ignore[method-assign]
    door.decider.liveness = dropping
    door.still(emb, 3)
    assert len(door.asked) == 1
    (decision,) = door.frames(*blink(emb))
    assert (decision.decision, decision.reason, decision.person) == ("spoof", "challenge_failed", None)
    step = decision.liveness.step_up
    assert (step.outcome, step.observed) == ("score_dropped", "blink") and not decision.liveness.live
    # A score that stays in the band (or rises) passes as before.
    steady = Door(gallery, 0.7, liveness_challenge="blink")
    steady.still(emb, 3)
    (decision,) = steady.frames(*blink(emb))
    assert decision.decision == "grant" and decision.liveness.step_up.outcome == "passed"


def test_a_static_face_times_out_as_spoof(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="any", liveness_challenge_timeout_ms=1000.0)
    door.still(emb, 3)
    (decision,) = door.still(emb, 40)  # a photo: nothing moves
    assert (decision.decision, decision.reason, decision.person) == ("spoof", "challenge_timeout", None)
    step = decision.liveness.step_up
    assert not decision.liveness.live and step.outcome == "timeout"
    assert step.waited_ms == pytest.approx(1000.0, abs=1000.0 / FPS)  # decided at the deadline, not before or much after
    assert step.frames == 24 and step.observed is None


def test_a_blink_before_the_challenge_does_not_count(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, decide=DecideConfig(min_frames=7, max_wait_ms=10_000.0), liveness_challenge="blink",
                liveness_challenge_timeout_ms=1000.0)
    door.frames(face(emb), *blink(emb))  # blinked while walking up; due (and asked) on the 7th frame
    assert len(door.asked) == 1
    (decision,) = door.still(emb, 40)
    assert decision.reason == "challenge_timeout"


def test_a_track_that_ends_while_asked_is_spoof(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7)
    door.still(emb, 5)
    decision = door.decider.decide(door.track)  # what the pipeline does with a lost track
    assert (decision.decision, decision.reason) == ("spoof", "challenge_failed")
    assert decision.liveness.step_up.outcome == "track_ended"


def test_another_face_doing_the_challenge_fails_it(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="turn")
    door.still(emb, 3)  # Ann's photo, uncertain
    other = unit(12)  # a live accomplice steps in and turns
    (decision,) = door.frames(*[face(other, yaw=y) for y in (0, 10, 20, 30)])
    assert (decision.decision, decision.reason) == ("spoof", "challenge_failed")
    assert decision.liveness.step_up.outcome == "face_changed"


def test_a_cue_passes_only_once_a_good_frame_shows_the_same_face(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7, liveness_challenge="turn")
    door.still(emb, 2)
    turned_away = [dataclasses.replace(face(emb, yaw=y), quality=BAD) for y in (0, 10, 20, 30)]  # the gate refuses them all
    assert door.frames(*turned_away) == []
    (decision,) = door.frames(face(emb, yaw=5))
    assert decision.decision == "grant" and decision.liveness.step_up.observed == "turn"


def test_outside_the_band_nothing_is_asked(ann) -> None:
    gallery, emb = ann
    confident = Door(gallery, 0.97)
    (grant,) = confident.still(emb, 3)
    assert grant.decision == "grant" and grant.liveness.step_up is None and not confident.asked
    low = Door(gallery, 0.2)
    (spoof,) = low.still(emb, 3)
    assert (spoof.decision, spoof.reason) == ("spoof", "liveness") and not low.asked


def test_a_band_below_the_threshold_gives_a_second_chance(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.3, liveness_uncertain_band=(0.25, 0.95), liveness_challenge="blink")
    door.still(emb, 3)
    (decision,) = door.frames(*blink(emb))
    assert decision.decision == "grant" and decision.liveness.live and decision.liveness.score == 0.3


def test_an_empty_band_and_a_camera_without_door_never_ask(ann) -> None:
    gallery, emb = ann
    off = Door(gallery, 0.7, liveness_uncertain_band=(0.0, 0.0))
    assert [d.decision for d in off.still(emb, 3)] == ["grant"] and not off.asked
    no_door = Door(gallery, 0.7, at_door=False)
    assert [d.decision for d in no_door.still(emb, 3)] == ["grant"] and not no_door.asked


def test_an_uncertain_track_that_ends_before_it_was_due_is_not_live(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7)
    door.still(emb, 1)
    decision = door.decider.decide(door.track)
    assert (decision.decision, decision.reason, decision.liveness.step_up.outcome) == ("spoof", "challenge_failed", "not_asked")


def test_a_reload_brings_the_new_doors_policy(ann) -> None:
    gallery, emb = ann
    door = Door(gallery, 0.7)
    strict = DoorConfig(name="front", camera="door", liveness_uncertain_band=(0.5, 0.99), liveness_challenge="blink")
    door.decider.reload(gallery, CameraRules((), DoorRules(strict, gallery.threshold)), None)
    assert door.decider.step_up_policy.band == (0.5, 0.99) and door.decider.step_up_policy.challenge == "blink"
    door.decider.reload(gallery, CameraRules(()), None)  # the door was removed: no step-up
    assert [d.decision for d in door.still(emb, 2)] == ["grant"] and not door.asked


def test_the_overlay_shows_the_pending_challenge(tmp_path: Path) -> None:
    import cv2

    from edge.events import ChallengeEvent
    from edge.video.annotate import PROMPTS, Annotator, prompt
    from edge.video.capture import Frame

    out = tmp_path / "out.avi"
    annotator = Annotator(out, ["door"])
    track = Track(7, (40.0, 40.0, 160.0, 160.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True)
    asked = ChallengeEvent(time.time(), "door", 7, "front", "turn", 5000.0, time.time() + 5, 6.0, 0.7, (0.5, 0.95))
    frame = Frame("door", 0, np.full((200, 200, 3), 128, np.uint8), time.time(), time.monotonic(), 1.0)
    annotator.write(frame, [track], {}, 15.0, {7: asked})
    annotator.close()
    ok, bgr = cv2.VideoCapture(str(out)).read()
    assert ok
    b, g, r = (int(v) for v in bgr[100, 40])  # the box's left edge
    assert b > 170 and r > 170 and g < 110, (b, g, r)  # magenta: asked, not yellow (deciding)
    assert PROMPTS["turn"] == "please turn your head"
    drawn = dataclasses.replace(asked, challenge="both", steps=("blink", "turn_right"))
    assert prompt(drawn) == "please blink, then turn your head to your right"


def test_default_band_follows_the_threshold_in_log_odds() -> None:
    assert default_band(0.5) == (0.5, pytest.approx(0.95))
    low, high = default_band(0.7)
    assert low == 0.7 and high == pytest.approx(1 / (1 + 0.3 / 0.7 / 19))
    policy = StepUpPolicy.for_door(DoorConfig(), 0.5, 20.0)
    assert policy.uncertain(0.5) and policy.uncertain(0.94) and not policy.uncertain(0.95) and not policy.uncertain(0.49)


def test_door_policy_keys_load_and_bad_bands_are_refused() -> None:
    door = {"name": "front", "camera": "cam0"}
    cfg = config_from_dict({"door": [{**door, "liveness_uncertain_band": [0, 0.95], "liveness_challenge": "any",
                                      "liveness_challenge_timeout_ms": 4000}]})
    assert cfg.door[0].liveness_uncertain_band == (0.0, 0.95) and cfg.door[0].liveness_challenge == "any"
    assert cfg.door[0].liveness_challenge_timeout_ms == 4000.0
    for band, message in (([0.9, 0.5], "0 <= low <= high <= 1"), ([0.5], "0 <= low <= high <= 1"), (["a", 1], "list of float")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"door": [{**door, "liveness_uncertain_band": band}]})
    with pytest.raises(ConfigError, match="must be one of both, turn, blink, any"):
        config_from_dict({"door": [{**door, "liveness_challenge": "smile"}]})
