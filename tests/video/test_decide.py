"""When a track is due for its one decision: wait for a good frame (a door), or answer by a
deadline after the face appeared (`[decide] max_face_wait_ms`, a kiosk) — never a grant on
frames the quality gate rejected."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge.config import CameraConfig, DecideConfig
from edge.gallery.crypto import new_key
from edge.gallery.search import Gallery, PersonProfile
from edge.video.decide import Decider, Evidence, Sample
from edge.video.track import Track

DIM = 32
MODEL = "edgeface_xxs_int8"


@pytest.fixture
def ann_gallery(tmp_path: Path):
    ann = np.random.default_rng(11).standard_normal(DIM).astype(np.float32)
    ann /= np.linalg.norm(ann)
    gallery = Gallery.open(tmp_path, new_key(), MODEL, DIM, threshold=0.5, create=True)
    gallery.enroll(PersonProfile("Ann"), [ann], [1.0])
    yield gallery, ann
    gallery.close()


def _turned_track(decider: Decider, ann: np.ndarray, face_at: float | None) -> Track:
    """A track whose face (Ann's, turned: every frame fails the gate) FaceMesh confirmed at
    source time `face_at` (None: never confirmed)."""
    ev = Evidence(None)
    ev.samples = [Sample(ann, 0.3, False)] * 3
    if face_at is not None:
        ev.first_face_t, ev.first_face_mono = face_at, time.monotonic()
    decider.evidence[7] = ev
    return Track(7, (0.0, 0.0, 100.0, 100.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True)


def test_a_door_waits_for_a_good_frame_however_long_the_face_is_turned(ann_gallery) -> None:
    gallery, ann = ann_gallery
    decider = Decider(DecideConfig(), CameraConfig(name="door", source="x"), gallery, {})
    track = _turned_track(decider, ann, face_at=1.0)
    assert not decider.due(track, 1.0 + 30.0)


def test_a_kiosk_answers_unknown_by_the_deadline_after_the_face_appeared(ann_gallery) -> None:
    gallery, ann = ann_gallery
    decider = Decider(DecideConfig(max_face_wait_ms=100.0), CameraConfig(name="kiosk", source="x"), gallery, {})
    track = _turned_track(decider, ann, face_at=2.0)
    assert not decider.due(track, 2.05)
    assert decider.due(track, 2.1)
    decision = decider.decide(track)
    # Ann's own embedding, but from frames the gate rejected: never a grant.
    assert (decision.decision, decision.reason, decision.person) == ("unknown", "low_quality", None)
    assert not decider.due(track, 3.0)  # one decision per track


def test_the_deadline_counts_from_a_confirmed_face_not_from_a_head(ann_gallery) -> None:
    gallery, ann = ann_gallery
    decider = Decider(DecideConfig(max_face_wait_ms=100.0), CameraConfig(name="kiosk", source="x"), gallery, {})
    track = _turned_track(decider, ann, face_at=None)  # the back of a head
    assert not decider.due(track, 30.0)


def test_a_good_frame_before_the_deadline_decides_as_usual(ann_gallery) -> None:
    gallery, ann = ann_gallery
    decider = Decider(DecideConfig(max_face_wait_ms=100.0, min_frames=1), CameraConfig(name="kiosk", source="x"), gallery, {})
    track = _turned_track(decider, ann, face_at=2.0)
    ev = decider.evidence[7]
    ev.samples = [Sample(ann, 0.9, True)]
    ev.first_ok_t, ev.first_ok_mono = 2.02, time.monotonic()
    assert decider.due(track, 2.02)
    decision = decider.decide(track)
    assert (decision.decision, decision.person) == ("grant", "Ann")


def test_a_wait_of_one_frame_interval_ends_on_the_next_frame(ann_gallery) -> None:
    """3/25 - 2/25 s is 39.999... ms in floating point: still one 40 ms frame interval."""
    gallery, ann = ann_gallery
    decider = Decider(DecideConfig(max_wait_ms=40.0, min_frames=3), CameraConfig(name="door", source="x"), gallery, {})
    track = _turned_track(decider, ann, face_at=2 / 25)
    ev = decider.evidence[7]
    ev.samples = [Sample(ann, 0.9, True)]
    ev.first_ok_t, ev.first_ok_mono = 2 / 25, time.monotonic()
    assert not decider.due(track, 2 / 25 + 0.02)
    assert decider.due(track, 3 / 25)
