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

from edge.detect import KP_LEFT_EYE, KP_RIGHT_EYE, Detection
from edge.runtime import Session

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


def roi_transform(detection: Detection) -> np.ndarray:
    """2x3 affine mapping image pixels into the 192 px mesh input (rotated square ROI)."""
    x1, y1, x2, y2 = detection.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * ROI_SCALE
    right, left = detection.keypoints[KP_RIGHT_EYE], detection.keypoints[KP_LEFT_EYE]
    angle = math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))
    scale = MESH_INPUT / side
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += (MESH_INPUT / 2 - cx, MESH_INPUT / 2 - cy)
    return m


class FaceMeshModel:
    """`mesh(rgb_image, detection) -> FaceMesh | None` (None when the model sees no face)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._input = session.inputs[0].name

    def __call__(self, image: np.ndarray, detection: Detection) -> FaceMesh | None:
        m = roi_transform(detection)
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
