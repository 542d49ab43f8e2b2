from __future__ import annotations

import numpy as np
import pytest

from edge.perception.detect import (
    KP_LEFT_EYE,
    KP_RIGHT_EYE,
    FaceDetector,
    ssd_anchors,
    weighted_nms,
)
from edge.perception.landmarks import FaceMeshModel
from edge.perception.registry import DETECTORS
from edge.perception.runtime import open_session
from tests.conftest import read_rgb


def test_anchor_layouts_match_the_model_outputs() -> None:
    assert len(ssd_anchors(DETECTORS["short"])) == 896
    assert len(ssd_anchors(DETECTORS["full"])) == 2304
    anchors = ssd_anchors(DETECTORS["full"])
    assert anchors.min() > 0 and anchors.max() < 1


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    points = np.zeros((3, 6, 2), dtype=np.float32)
    points[1] += 2.0
    kept = weighted_nms(boxes, points, np.array([0.9, 0.9, 0.8]), 0.3)
    assert len(kept) == 2
    merged_box, merged_pts, score = kept[0]
    np.testing.assert_allclose(merged_box, [0.5, 0.5, 10.5, 10.5])
    np.testing.assert_allclose(merged_pts, 1.0)
    assert score == pytest.approx(0.9)


@pytest.mark.parametrize("variant", ["short", "full"])
def test_detects_both_people_with_keypoints_on_their_faces(variant, model_store, shared_data) -> None:
    det = FaceDetector(open_session(model_store.path(f"detector_{variant}")), DETECTORS[variant])
    image = read_rgb(shared_data / "face_recognition/images/two_people.jpg")
    faces = det(image)
    assert len(faces) == 2
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert face.score > 0.7 and 100 < x2 - x1 < 300
        for x, y in face.keypoints[:4]:
            assert x1 <= x <= x2 and y1 <= y <= y2
        # The subject's right eye appears on the image's left.
        assert face.keypoints[KP_RIGHT_EYE, 0] < face.keypoints[KP_LEFT_EYE, 0]


def test_blank_and_tiny_images_give_no_faces(model_store) -> None:
    det = FaceDetector(open_session(model_store.path("detector_short")), DETECTORS["short"])
    assert det(np.zeros((480, 640, 3), dtype=np.uint8)) == []
    assert det(np.full((3, 2, 3), 128, dtype=np.uint8)) == []


def test_onnx_conversion_matches_the_tflite_originals(model_store, shared_data) -> None:
    pytest.importorskip("ai_edge_litert")
    image = read_rgb(shared_data / "face_recognition/images/obama-720p.jpg")
    onnx_det = FaceDetector(open_session(model_store.path("detector_full")), DETECTORS["full"])
    tfl_det = FaceDetector(open_session(model_store.path("detector_full_tflite"), "tflite"), DETECTORS["full"])
    a, b = onnx_det(image), tfl_det(image)
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(a[0].box, b[0].box, atol=0.5)
    np.testing.assert_allclose(a[0].keypoints, b[0].keypoints, atol=0.5)
    mesh_onnx = FaceMeshModel(open_session(model_store.path("facemesh")))(image, a[0])
    mesh_tfl = FaceMeshModel(open_session(model_store.path("facemesh_tflite"), "tflite"))(image, a[0])
    np.testing.assert_allclose(mesh_onnx.points, mesh_tfl.points, atol=0.5)


def test_facemesh_eyes_and_mouth_sit_between_the_blazeface_keypoints(model_store, shared_data) -> None:
    det = FaceDetector(open_session(model_store.path("detector_short")), DETECTORS["short"])
    mesh_model = FaceMeshModel(open_session(model_store.path("facemesh")))
    image = read_rgb(shared_data / "face_recognition/images/obama-720p.jpg")
    face = det(image)[0]
    mesh = mesh_model(image, face)
    assert mesh is not None and mesh.points.shape == (468, 3)
    eye_dist = np.linalg.norm(face.keypoints[0] - face.keypoints[1])
    right_eye = mesh.points[[33, 133], :2].mean(0)
    left_eye = mesh.points[[263, 362], :2].mean(0)
    assert np.linalg.norm(right_eye - face.keypoints[KP_RIGHT_EYE]) < 0.25 * eye_dist
    assert np.linalg.norm(left_eye - face.keypoints[KP_LEFT_EYE]) < 0.25 * eye_dist
