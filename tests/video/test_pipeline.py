"""The video runtime end to end on real videos: who is granted, who never is, one decision per track."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import pytest

from edge.access.rules import person_refusal
from edge.config import CameraConfig, Config, DecideConfig
from edge.events import DecisionEvent
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.perception.faces import Perception, embedder_model_name
from edge.service.metrics import MetricsObserver
from edge.video.observer import Observer
from edge.video.pipeline import Pipeline
from tests.support.faces import enroll_demo_people, enroll_from_video, new_gallery, video_frames

REPO = Path(__file__).resolve().parents[2]


def run(cfg: Config, gallery: Gallery, perception: Perception, cameras: list[CameraConfig], liveness=None) -> tuple[list[DecisionEvent], dict]:
    pipeline = Pipeline(cfg, gallery, cameras, perception=perception, liveness=liveness)
    decisions: list[DecisionEvent] = []
    pipeline.on_decision = decisions.append
    summary = pipeline.run(max_seconds=300)
    return decisions, summary.to_dict()


def test_person_enrolled_from_one_part_is_granted_on_another_and_denied_where_not_allowed(
    shared_data: Path, perception: Perception, tmp_path: Path
) -> None:
    video = shared_data / "videos" / "apfol_real2.webm"
    gallery = new_gallery(tmp_path / "g", perception)
    assert enroll_from_video(gallery, perception, "Webcam Man", video, 0, 70, 7) >= 5
    enroll_demo_people(gallery, perception, skip=set())
    # The rest of the clip (frames 100-213) as a folder of stills: also exercises that source.
    folder = tmp_path / "later"
    folder.mkdir()
    for i, bgr in enumerate(video_frames(video, 100, 214)):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), bgr)
    cameras = [
        CameraConfig(name="kiosk", source=str(folder), fps=30.0),
        CameraConfig(name="door", source=str(folder), fps=30.0, groups=("staff",)),
    ]
    decisions, summary = run(perception.cfg, gallery, perception, cameras)
    assert summary["frames"] == 2 * 114
    kiosk = [d for d in decisions if d.camera == "kiosk"]
    door = [d for d in decisions if d.camera == "door"]
    assert [d.decision for d in kiosk] == ["grant"] and kiosk[0].person == "Webcam Man"
    assert kiosk[0].score is not None and kiosk[0].score >= gallery.threshold
    assert kiosk[0].frames_used >= perception.cfg.decide.min_frames
    assert kiosk[0].models["embedder"].startswith(embedder_model_name(perception.cfg) + "@")
    # Known but not in the door's group: deny, with the person and the reason.
    assert [(d.decision, d.person, d.reason) for d in door] == [("deny", "Webcam Man", "not_in_groups")]
    gallery.close()


def test_nobody_is_granted_on_videos_of_people_not_enrolled(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    gallery = new_gallery(tmp_path / "g", perception)
    enroll_from_video(gallery, perception, "Webcam Man", shared_data / "videos" / "apfol_real2.webm", 0, 214, 10)
    # Everyone bundled except the two people who appear in the Hamilton clip.
    enroll_demo_people(gallery, perception, skip={"Lin Manuel Miranda", "Barack Obama"})
    assert len(gallery) == 5
    cfg = dataclasses.replace(perception.cfg, detect=dataclasses.replace(perception.cfg.detect, model="full"))
    crowd_perception = Perception(cfg, perception.store)
    crowd, crowd_summary = run(cfg, gallery, crowd_perception, [CameraConfig(name="arcade", source=str(shared_data / "videos" / "facenet_pytorch_video.mp4"))])
    stage, _ = run(perception.cfg, gallery, perception, [CameraConfig(name="stage", source=str(REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"))])
    assert len(crowd) >= 5 and len(stage) >= 3
    assert crowd_summary["faces"] > 200
    assert not [d for d in crowd + stage if d.decision == "grant"]
    assert all(d.person is None for d in crowd + stage)
    # One decision per track.
    keys = [(d.camera, d.track_id) for d in crowd + stage]
    assert len(keys) == len(set(keys))
    # The arcade crowd has people walking past with their backs or hair to the camera: the
    # detector fires on their heads, FaceMesh confirms no face, and the decision says so.
    no_face = [d for d in crowd if d.reason == "no_face"]
    assert no_face and all(d.decision == "unknown" and d.face_latency_ms is None for d in no_face)
    for d in crowd + stage:
        if d.reason != "no_face":
            # first frame of the track <= first confirmed face <= first gate-passing frame
            assert d.face_latency_ms is not None and d.face_latency_ms <= d.latency_ms + 1e-6
            assert d.usable_latency_ms is None or d.usable_latency_ms <= d.face_latency_ms + 1e-6
    gallery.close()


def test_access_rules() -> None:
    groups = ("staff", "night")
    now = 1_800_000_000
    assert person_refusal(PersonProfile(name="a", groups=("night",)), groups, now) is None
    assert person_refusal(PersonProfile(name="a", groups=("guests",)), groups, now) == "not_in_groups"
    assert person_refusal(PersonProfile(name="a", groups=("staff",), valid_until=now - 1), groups, now) == "expired"
    assert person_refusal(PersonProfile(name="a", groups=("staff",), valid_from=now + 60), groups, now) == "not_yet_valid"
    assert person_refusal(PersonProfile(name="a", groups=("staff",), consent=False), groups, now) == "no_consent"
    assert person_refusal(PersonProfile(name="a"), (), now) is None


@pytest.mark.parametrize("min_frames", [1, 5])
def test_decision_waits_for_min_frames_of_good_quality(shared_data: Path, perception: Perception, tmp_path: Path, min_frames: int) -> None:
    cfg = dataclasses.replace(perception.cfg, decide=DecideConfig(min_frames=min_frames, max_wait_ms=10_000))
    gallery = new_gallery(tmp_path / "g", perception)
    decisions, _ = run(cfg, gallery, perception, [CameraConfig(source=str(shared_data / "videos" / "apfol_real2.webm"))])
    assert len(decisions) == 1
    d = decisions[0]
    assert (d.decision, d.person, d.reason) == ("unknown", None, "no_match")  # empty gallery
    # A track counts from its second detection (`[track] min_hits`), so never fewer than that.
    assert d.frames_used == max(min_frames, cfg.track.min_hits)
    gallery.close()


class Counting(Observer):
    name = "counting"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.events: list[DecisionEvent] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_start(self, pipeline) -> None:
        self._count("start")

    def on_frame(self, state, frame, seconds) -> None:
        assert seconds > 0 and state.cam.name == frame.camera
        self._count("frame")

    def on_decision(self, event) -> None:
        self.events.append(event)
        self._count("decision")

    def on_tick(self) -> None:
        self._count("tick")

    def on_stop(self, summary) -> None:
        self._count("stop")


class Broken(Observer):
    """Fails in every hook after the start, as a buggy metrics or sync observer might."""

    name = "broken"

    def on_frame(self, state, frame, seconds) -> None:
        raise RuntimeError("frame hook bug")

    def on_decision(self, event) -> None:
        raise RuntimeError("decision hook bug")

    def on_tick(self) -> None:
        raise RuntimeError("tick hook bug")

    def on_stop(self, summary) -> None:
        raise RuntimeError("stop hook bug")


def test_observers_see_every_frame_decision_and_tick(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    gallery = new_gallery(tmp_path / "g", perception)
    pipeline = Pipeline(perception.cfg, gallery, [CameraConfig(source=str(shared_data / "videos" / "apfol_real2.webm"))], perception=perception)
    counting = Counting()
    pipeline.observers.add(counting)
    summary = pipeline.run(max_seconds=120)
    c = counting.calls
    assert c["start"] == 1 and c["stop"] == 1
    assert c["frame"] == summary.frames == 214
    assert c["tick"] >= c["frame"]
    assert c["decision"] == 1 and counting.events[0].frames_used == 3
    gallery.close()


def test_an_observer_that_raises_neither_ends_the_run_nor_starves_the_others(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    gallery = new_gallery(tmp_path / "g", perception)
    pipeline = Pipeline(perception.cfg, gallery, [CameraConfig(source=str(shared_data / "videos" / "apfol_real2.webm"))], perception=perception)
    counting, metrics = Counting(), MetricsObserver(perception.cfg)
    pipeline.observers.add(Broken(), counting, metrics)  # the broken one runs first, every time
    summary = pipeline.run(max_seconds=120)
    assert summary.frames == 214 and counting.calls["frame"] == 214 and counting.calls["stop"] == 1
    assert len(counting.events) == 1
    # Every failure counted under the observer's name, and shown on /metrics; retried at every
    # hook, never switched off (edge/video/observer.py).
    errors = 214 + counting.calls["tick"] + 1 + 1
    assert pipeline.observers.errors["broken"] == errors
    assert metrics.registry.get_sample_value("facegate_observer_errors_total", {"observer": "broken"}) == errors
    assert metrics.registry.get_sample_value("facegate_frames_total", {"camera": "cam0"}) == 214
    gallery.close()


def test_detecting_every_third_frame_still_tracks_one_face_to_one_decision(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    cfg = dataclasses.replace(perception.cfg, track=dataclasses.replace(perception.cfg.track, detect_every=3))
    gallery = new_gallery(tmp_path / "g", perception)
    decisions, summary = run(cfg, gallery, perception, [CameraConfig(source=str(shared_data / "videos" / "apfol_real2.webm"))])
    assert summary["frames"] == 214
    assert 70 <= summary["faces"] <= 72  # the detector ran on frames 0, 3, 6, ...
    # Between detector runs the face's mesh follows it, so every frame still gives a sample;
    # the track counts from its second detection (frame 3), by when it has 4.
    assert len(decisions) == 1 and decisions[0].frames_used == 4
    gallery.close()


def test_real_people_in_the_crowd_and_on_stage_are_never_called_spoof(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    """BPCER on real footage: lighting (arcade glare, stage lights) must not make a live face a spoof."""
    from edge.perception.liveness.checker import Liveness

    gallery = new_gallery(tmp_path / "g", perception)
    full = dataclasses.replace(perception.cfg, detect=dataclasses.replace(perception.cfg.detect, model="full"))
    crowd_perception = Perception(full, perception.store)
    outcomes = []
    for cfg, p, clip in (
        (full, crowd_perception, shared_data / "videos" / "facenet_pytorch_video.mp4"),
        (perception.cfg, perception, REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"),
    ):
        decisions, _ = run(cfg, gallery, p, [CameraConfig(source=str(clip))], liveness=Liveness(cfg, p.store))
        outcomes += [(clip.name, d.track_id, d.decision, d.liveness) for d in decisions]
    assert len(outcomes) >= 15
    assert [o for o in outcomes if o[2] == "spoof"] == []
    gallery.close()
