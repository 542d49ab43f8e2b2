"""Tracker unit tests on synthetic detections: ids persist, gaps and cuts end tracks."""

from __future__ import annotations

import numpy as np

from edge.config import TrackConfig
from edge.perception.detect import Detection
from edge.video.track import SceneCut, Tracker, iou


def det(x: float, y: float, size: float = 80.0) -> Detection:
    return Detection((x, y, x + size, y + size), np.zeros((6, 2), np.float32), 0.9)


def test_two_faces_keep_their_ids_while_walking_past_each_other() -> None:
    tracker = Tracker(TrackConfig(min_hits=2))
    ids_left, ids_right = set(), set()
    for k in range(30):
        t = k / 30
        # Two faces crossing horizontally at 6 px/frame, one above the other (no overlap).
        tracker.update([det(100 + 6 * k, 100), det(400 - 6 * k, 260)], t, t, t)
        by_y = {tr.box[1] < 200: tr.track_id for tr in tracker.tracks}
        ids_left.add(by_y[True])
        ids_right.add(by_y[False])
    assert len(ids_left) == 1 and len(ids_right) == 1 and ids_left != ids_right
    assert all(tr.confirmed for tr in tracker.tracks)


def test_fast_small_face_is_followed_by_its_predicted_position() -> None:
    tracker = Tracker(TrackConfig())
    x = 50.0
    for k in range(10):
        t = k / 30
        # A 30 px face speeding up to a whole face width per frame: no overlap between
        # frames, only the velocity prediction can follow it.
        x += min(30, 10 + 5 * k)
        tracker.update([det(x, 100, size=30)], t, t, t)
    assert len(tracker.tracks) == 1 and tracker.tracks[0].hits == 10


def test_short_miss_keeps_the_track_and_a_long_one_ends_it() -> None:
    tracker = Tracker(TrackConfig(max_missed_ms=300))
    for k in range(5):
        tracker.update([det(100, 100)], k / 30, 0, 0)
    first = tracker.tracks[0].track_id
    assert tracker.update([], 5 / 30, 0, 0) == []  # one missed frame: still there
    tracker.update([det(101, 100)], 6 / 30, 0, 0)
    assert tracker.tracks[0].track_id == first
    ended = []
    for k in range(7, 30):
        ended += tracker.update([], k / 30, 0, 0)
    assert [tr.track_id for tr in ended] == [first]
    tracker.update([det(100, 100)], 1.0, 0, 0)
    assert tracker.tracks[0].track_id != first  # coming back is a new track


def test_one_frame_blip_never_becomes_a_confirmed_track() -> None:
    tracker = Tracker(TrackConfig(min_hits=2))
    tracker.update([det(100, 100)], 0.0, 0, 0)
    assert not tracker.tracks[0].confirmed
    ended = tracker.update([], 1 / 30, 0, 0)
    assert len(ended) == 1 and not ended[0].confirmed and tracker.tracks == []


def test_prediction_moves_boxes_between_detector_runs() -> None:
    tracker = Tracker(TrackConfig())
    for k in range(5):
        tracker.update([det(100 + 10 * k, 100)], k / 30, 0, 0)
    pred = tracker.tracks[0].predicted(5 / 30)
    assert pred[0] > tracker.tracks[0].box[0] + 5  # moving right at ~10 px/frame
    assert iou(pred, det(150, 100).box) > 0.8


def test_scene_cut_flags_a_cut_not_motion() -> None:
    cut = SceneCut(45.0)
    rng = np.random.default_rng(0)
    dark = np.full((360, 640, 3), 30, np.uint8)
    assert not cut(dark)
    moved = dark.copy()
    moved[100:200, 100:200] = 200  # a person-sized change: not a cut
    assert not cut(moved)
    bright = rng.integers(150, 255, (360, 640, 3), dtype=np.uint8)
    assert cut(bright)


def test_a_change_of_frame_size_is_a_cut_not_a_crash() -> None:
    cut = SceneCut(45.0)
    assert not cut(np.full((360, 640, 3), 30, np.uint8))
    assert cut(np.full((250, 250, 3), 30, np.uint8))
    assert not cut(np.full((250, 250, 3), 30, np.uint8))
