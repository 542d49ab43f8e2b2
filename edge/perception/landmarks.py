"""FaceMesh: 468 dense landmarks from a detected face (MediaPipe `face_landmark` model).

BlazeFace keypoints are coarse (eye centres, nose, mouth centre); FaceMesh gives eye corners,
lids, nose base and mouth corners, which both embedder templates need for exact alignment, and
later feeds liveness (blink) and pose estimates. The ROI is the MediaPipe one: the detection box
grown 1.5x, made square, rotated so the eyes are level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.perception.detect import KP_LEFT_EYE, KP_RIGHT_EYE, Detection
from edge.perception.runtime import Session

MESH_INPUT = 192
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5

# Mesh indices (subject's left/right) used by alignment, quality and liveness.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM = 33, 133, 159, 145
LEFT_EYE_OUTER, LEFT_EYE_INNER, LEFT_EYE_TOP, LEFT_EYE_BOTTOM = 263, 362, 386, 374
NOSE_TIP, NOSE_BASE = 1, 2
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
CHIN, FOREHEAD = 152, 10


@dataclass(frozen=True, slots=True, eq=False)
class FaceMesh:
    points: np.ndarray = field(repr=False)  # (468, 3): x, y in image pixels, z in the same scale
    presence: float


# Mesh points standing for BlazeFace's six keypoints (eye centres, nose tip, mouth centre,
# ear tragions), in its KP_* order: right eye, left eye, nose, mouth, right ear, left ear.
_KEYPOINT_SETS = ((RIGHT_EYE_OUTER, RIGHT_EYE_INNER), (LEFT_EYE_OUTER, LEFT_EYE_INNER), (1,), (13, 14), (234,), (454,))


def mesh_keypoints(mesh: FaceMesh) -> np.ndarray:
    """(6, 2) keypoints from the mesh — steadier than a detector's at the bottom of its scale."""
    return np.stack([mesh.points[list(ids), :2].mean(0) for ids in _KEYPOINT_SETS]).astype(np.float32)


# A second pass on an ROI taken from the first pass's landmarks runs when the detector's box
# was this far off (centre shift or size, relative to the face): FaceMesh is trained on ROIs
# that fit the face, and a loose box (small faces, short-range detector) gives loose landmarks.
REFINE_TOLERANCE = 0.12


def roi_transform(cx: float, cy: float, side: float, right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray:
    """2x3 affine mapping image pixels into the 192 px mesh input (square ROI, eyes level)."""
    angle = math.degrees(math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    m = cv2.getRotationMatrix2D((cx, cy), angle, MESH_INPUT / side)
    m[:, 2] += (MESH_INPUT / 2 - cx, MESH_INPUT / 2 - cy)
    return m


def _detection_roi(det: Detection) -> tuple[float, float, float]:
    x1, y1, x2, y2 = det.box
    return (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * ROI_SCALE


def _mesh_roi(points: np.ndarray) -> tuple[float, float, float]:
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    centre = (lo + hi) / 2
    return float(centre[0]), float(centre[1]), float((hi - lo).max()) * ROI_SCALE


class FaceMeshModel:
    """`mesh(rgb_image, detection) -> FaceMesh | None` (None when the model sees no face)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._input = session.inputs[0].name

    def __call__(self, image: np.ndarray, detection: Detection) -> FaceMesh | None:
        kp = detection.keypoints
        cx, cy, side = _detection_roi(detection)
        mesh = self._run(image, roi_transform(cx, cy, side, kp[KP_RIGHT_EYE], kp[KP_LEFT_EYE]))
        if mesh is None:
            return None
        mx, my, mside = _mesh_roi(mesh.points)
        if max(abs(mx - cx), abs(my - cy), abs(mside - side)) <= REFINE_TOLERANCE * side:
            return mesh
        p = mesh.points
        right_eye = p[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER], :2].mean(0)
        left_eye = p[[LEFT_EYE_OUTER, LEFT_EYE_INNER], :2].mean(0)
        return self._run(image, roi_transform(mx, my, mside, right_eye, left_eye)) or mesh

    def follow(self, image: np.ndarray, previous: FaceMesh, shift: tuple[float, float]) -> FaceMesh | None:
        """The mesh in a new frame from the previous frame's mesh moved by `shift` (the track's
        box motion): MediaPipe's own tracking scheme. The ROI comes from 468 points instead of a
        6-keypoint box, so small faces need no zoomed re-detection first (one model run, not two
        or three). None when the face is no longer there; the caller falls back to detection."""
        p = previous.points.copy()
        p[:, :2] += np.asarray(shift, np.float32)
        right_eye = p[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER], :2].mean(0)
        left_eye = p[[LEFT_EYE_OUTER, LEFT_EYE_INNER], :2].mean(0)
        cx, cy, side = _mesh_roi(p)
        return self._run(image, roi_transform(cx, cy, side, right_eye, left_eye))

    def _run(self, image: np.ndarray, m: np.ndarray) -> FaceMesh | None:
        crop = cv2.warpAffine(
            image, m, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        tensor = crop.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        outputs = self._session.run({self._input: tensor})
        raw = next(o for o in outputs if o.size == 468 * 3).reshape(468, 3)
        flag = float(next(o for o in outputs if o.size == 1).reshape(()))
        presence = 1.0 / (1.0 + math.exp(-max(-80.0, min(80.0, flag))))
        if presence < MIN_PRESENCE:
            return None
        inv = cv2.invertAffineTransform(m)
        xy = raw[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = raw[:, 2:3] / (m[0, 0] ** 2 + m[0, 1] ** 2) ** 0.5
        return FaceMesh(np.hstack([xy, z]).astype(np.float32), presence)
