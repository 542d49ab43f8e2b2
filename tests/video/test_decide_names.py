"""The decider stamps `[privacy] show_names` on each event it makes: the name goes out only then."""

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


@pytest.fixture
def ann(tmp_path: Path):
    face = np.random.default_rng(11).standard_normal(DIM).astype(np.float32)
    face /= np.linalg.norm(face)
    gallery = Gallery.open(tmp_path, new_key(), "edgeface_xxs_int8", DIM, threshold=0.5, create=True)
    record = gallery.enroll(PersonProfile("Ann"), [face], [1.0])
    yield gallery, face, record.uid
    gallery.close()


def _grant(decider: Decider, face: np.ndarray, track_id: int):
    ev = Evidence(None)
    ev.samples = [Sample(face, 0.9, True)]
    ev.first_ok_t, ev.first_ok_mono = 0.0, time.monotonic()
    decider.evidence[track_id] = ev
    return decider.decide(Track(track_id, (0.0, 0.0, 100.0, 100.0), 0.0, time.monotonic(), time.time(), 0.0, confirmed=True))


def test_events_carry_the_name_only_while_show_names_is_on(ann) -> None:
    gallery, face, uid = ann
    decider = Decider(DecideConfig(min_frames=1), CameraConfig(name="door", source="x"), gallery, {})
    hidden = _grant(decider, face, 1)
    assert hidden.decision == "grant" and hidden.person == "Ann"  # inside: the kiosk's identify still knows
    assert hidden.body["person_uid"] == uid and "person" not in hidden.body and hidden.label == uid
    decider.show_names = True  # what a reload with [privacy] show_names = true does (edge/video/pipeline.py)
    shown = _grant(decider, face, 2)
    assert shown.body["person"] == "Ann" and shown.body["person_uid"] == uid and shown.label == "Ann"
