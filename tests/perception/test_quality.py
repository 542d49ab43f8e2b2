from __future__ import annotations

import cv2
import numpy as np

from edge.perception.detect import Detection
from edge.perception.quality import estimate_pose
from tests.conftest import read_rgb


def test_frontal_well_lit_face_passes(perception, shared_data) -> None:
    face = perception.faces(read_rgb(shared_data / "face_recognition/images/obama-720p.jpg"), embed=False)[0]
    assert face.quality.ok, face.quality.reasons
    assert abs(face.quality.yaw_deg) < 15 and abs(face.quality.pitch_deg) < 20


def test_small_dark_and_blurred_faces_say_why(perception, shared_data) -> None:
    image = read_rgb(shared_data / "face_recognition/images/obama-720p.jpg")
    dark = (image * 0.12).astype(np.uint8)
    assert any(r.startswith("underexposed") for r in perception.faces(dark, embed=False)[0].quality.reasons)
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    assert any(r.startswith("blurry") for r in perception.faces(blurred, embed=False)[0].quality.reasons)
    face = perception.faces(image, embed=False)[0]
    far_away = Detection(face.detection.box, face.detection.keypoints * 0.15, face.detection.score)
    quality = perception.quality(far_away, face.chip)
    assert any(r.startswith("too_small") for r in quality.reasons)
    assert quality.score < face.quality.score


def test_pose_sign_flips_with_the_mirror_image() -> None:
    # right eye, left eye, nose, mouth, right ear, left ear — nose shifted towards the left ear.
    kp = np.array([[40, 50], [80, 50], [68, 70], [62, 90], [10, 55], [100, 55]], dtype=np.float32)
    yaw, pitch = estimate_pose(kp)
    mirrored = kp.copy()
    mirrored[:, 0] = 110 - mirrored[:, 0]
    mirrored = mirrored[[1, 0, 2, 3, 5, 4]]
    yaw_m, pitch_m = estimate_pose(mirrored)
    assert yaw > 10
    assert abs(yaw_m + yaw) < 1e-6
    assert abs(pitch - pitch_m) < 1e-6
