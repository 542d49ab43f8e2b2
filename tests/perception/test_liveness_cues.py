"""The multi-frame and pixel cues on real faces: a photo moved as a plane, closed lids, a turned
head, a reflection — each cue reacts to its phenomenon and stays neutral without it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import Config, LivenessConfig
from edge.perception.faces import Face, Perception
from edge.perception.liveness import cues
from edge.perception.liveness.checker import Liveness, TrackLiveness


def _frames(path: Path, stop: int, step: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    for i in range(stop):
        ok, bgr = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


@pytest.fixture(scope="module")
def real_frames(shared_data: Path) -> list[np.ndarray]:
    return _frames(shared_data / "videos" / "apfol_real2.webm", 214, 3)


def _largest(perception: Perception, rgb: np.ndarray) -> Face:
    faces = perception.faces(rgb, embed=False)
    assert faces, "no face in a frame that has one"
    return faces[0]


def _track(liveness: Liveness, perception: Perception, frames: list[np.ndarray]) -> TrackLiveness:
    track = liveness.new_track()
    for n, rgb in enumerate(frames):
        track.add(rgb, _largest(perception, rgb), n / 10.0)
    return track


def _photo_moved_as_plane(rgb: np.ndarray, n: int) -> list[np.ndarray]:
    """The frame as a printed photo held up and tilted: each view is one homography of it."""
    h, w = rgb.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    views = []
    for k in range(n):
        t = k / (n - 1)
        tilt = 0.12 * w * np.sin(np.pi * t)  # the right edge recedes: rotation about the vertical
        shift = 40.0 * t
        dst = np.float32([[shift, 0], [w - tilt + shift, tilt * 0.5], [w - tilt + shift, h - tilt * 0.5], [shift, h]])
        m = cv2.getPerspectiveTransform(src, dst)
        views.append(cv2.warpPerspective(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return views


def test_planar_cue_flags_a_photo_moving_as_a_plane_but_not_a_turning_head(
    model_store, perception: Perception, real_frames: list[np.ndarray]
) -> None:
    liveness = Liveness(Config(), model_store)
    photo = _track(liveness, perception, _photo_moved_as_plane(real_frames[10], 12)).result()
    head = _track(liveness, perception, real_frames).result()
    # The synthetic photo moved enough for parallax to show, and showed none.
    assert photo.cues["planar"] < 0.25, photo
    assert head.cues["planar"] == 0.5, head


def test_blink_needs_lids_that_close_and_open_again(perception: Perception, real_frames: list[np.ndarray]) -> None:
    points = _largest(perception, real_frames[0]).mesh.points  # type: ignore[union-attr]
    open_ear = cues.eye_aspect_ratio(points)
    assert 0.15 < open_ear < 0.45
    closed = points.copy()
    for eye in (cues.RIGHT_EYE, cues.LEFT_EYE):
        upper, lower = eye[1:3], eye[4:6][::-1]  # upper lid points and the lower ones under them
        closed[list(upper), :2] = closed[list(lower), :2]
    assert cues.eye_aspect_ratio(closed) < 0.05
    sequence = [open_ear] * 4 + [cues.eye_aspect_ratio(closed)] * 2 + [open_ear] * 4
    assert cues.blink_score(sequence) > 0.5
    assert cues.blink_score([open_ear] * 10) == 0.5
    # Starting closed is not a blink (it might be a printed face with closed eyes).
    assert cues.blink_score([cues.eye_aspect_ratio(closed)] * 3 + [open_ear] * 7) == 0.5


def test_a_dip_of_the_eye_ratio_during_a_fast_head_swing_is_not_a_blink() -> None:
    # Measured on the clips: a live man's swing from 24° to -14° dipped the eye aspect ratio to
    # 0.21 (open 0.28), a replay's ~35° turn to 0.18. Timed against yaw, the same dip counts only
    # while the head is steady.
    ears = [0.28] * 5 + [0.18, 0.17] + [0.28] * 5
    steady = [2.0, 1.5, 2.5, 2.0, 1.0, 1.5, 2.0, 3.0, 2.0, 1.5, 2.0, 2.5]  # FaceMesh jitter
    swing = [24.0, 24.0, 23.0, 22.0, 18.0, 8.0, -4.0, -14.0, -14.0, -13.0, -14.0, -14.0]
    assert cues.blinked(ears, steady) and cues.blink_score(ears, steady) > 0.5
    assert not cues.blinked(ears, swing) and cues.blink_score(ears, swing) == 0.5
    # A swing before or after the blink does not hide a blink made with the head still.
    later = [24.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -20.0, -30.0]
    assert cues.blinked(ears, later)
    # Two dips, one in a swing, one steady: the steady one counts.
    ears2 = [0.28] * 4 + [0.17] + [0.28] * 4 + [0.17] + [0.28] * 4
    yaws2 = [0.0] * 3 + [0.0, 20.0, 35.0] + [35.0] * 3 + [35.0, 35.0, 35.0] + [35.0] * 2
    assert cues.blinked(ears2, yaws2)
    assert not cues.blinked(ears2[:8], yaws2[:8])


def test_turn_head_challenge_passes_on_a_moving_head_and_fails_on_a_still_one(
    model_store, perception: Perception, real_frames: list[np.ndarray]
) -> None:
    yaws = [cues.yaw_deg(_largest(perception, f).mesh.points) for f in real_frames]  # type: ignore[union-attr]
    assert max(yaws) - min(yaws) > 20.0  # the man in the clip turns his head
    cfg = dataclasses.replace(Config(), liveness=LivenessConfig(challenge="turn_head", challenge_yaw_deg=20.0))
    liveness = Liveness(cfg, model_store)
    moving = _track(liveness, perception, real_frames).result()
    still = _track(liveness, perception, [real_frames[0]] * 8).result()
    assert moving.challenge == "passed" and moving.live
    assert still.challenge == "failed" and not still.live
    assert still.score >= still.threshold  # the face itself looks live: only the challenge failed


def test_glare_cue_reacts_to_a_reflection_not_to_skin(perception: Perception, real_frames: list[np.ndarray]) -> None:
    face = _largest(perception, real_frames[5])
    region = cues.face_region(real_frames[5], face.detection.box).copy()
    assert cues.glare_score(region)[0] == 0.5
    h, w = region.shape[:2]
    reflected = region.copy()
    reflected[: h // 3, w // 4 : w // 2] = (250, 250, 252)  # a window's reflection on the glass
    score, share = cues.glare_score(reflected)
    assert share > 0.05 and score < 0.3


def test_moire_cue_reacts_to_a_periodic_pattern(perception: Perception, real_frames: list[np.ndarray]) -> None:
    face = _largest(perception, real_frames[5])
    region = cues.face_region(real_frames[5], face.detection.box).astype(np.float32)
    assert cues.moire_score(region.astype(np.uint8))[0] == 0.5
    yy, xx = np.mgrid[: region.shape[0], : region.shape[1]]
    # A screen's pixel grid beating with the sensor: a fine diagonal grating over the face.
    grating = 18.0 * np.sin(2 * np.pi * (xx + 0.6 * yy) / (region.shape[1] / 40.0))
    striped = np.clip(region + grating[..., None], 0, 255).astype(np.uint8)
    score, peak = cues.moire_score(striped)
    assert peak > cues.MOIRE_PEAK and score < 0.5


def test_homography_residual_is_zero_for_a_plane_and_not_for_parallax() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, (60, 2))
    h = np.array([[1.1, 0.05, 3.0], [-0.02, 0.95, -4.0], [1e-4, 2e-4, 1.0]])
    ah = np.c_[a, np.ones(60)] @ h.T
    b = ah[:, :2] / ah[:, 2:]
    assert cues.homography_residual(a, b) < 1e-6
    depth = rng.uniform(-1, 1, 60)
    assert cues.homography_residual(a, b + np.c_[depth * 5.0, np.zeros(60)]) > 1.0


def test_flat_region_gives_no_moire_evidence_instead_of_failing() -> None:
    from edge.perception.liveness.cues import moire_score

    assert moire_score(np.full((96, 96, 3), 128, np.uint8)) == (0.5, 0.0)
