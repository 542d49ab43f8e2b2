"""Landmarks → similarity transform → the canonical chip each embedder was trained on.

An embedder only works on chips cropped exactly like its training data, so each template here
reproduces its training pipeline:
- `arcface`: the 5-point 112×112 template used by InsightFace/EdgeFace (eye centres, nose tip,
  mouth corners), fitted by least squares (Umeyama) — no RANSAC, the points are few and clean.
- `dlib`: dlib's `get_face_chip_details(shape, 150, 0.25)` for its 5-point model (eye corners
  and nose base mapped onto dlib's mean face).
Landmarks come from FaceMesh when available (exact corners), else from BlazeFace keypoints,
where eye corners and mouth corners are unknown and the template's matching centres are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.perception import landmarks as lm
from edge.perception.detect import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, Detection
from edge.perception.landmarks import FaceMesh

# InsightFace's arcface_dst for 112×112 (image-left eye first, i.e. the subject's right eye).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# dlib's mean face (its `mean_face_shape_x/y` for 68-point indices 36, 39, 42, 45, 33), mapped to a
# chip with padding p as (p + v) / (2p + 1) * size. Order: subject's right eye outer, right eye
# inner, left eye inner, left eye outer, nose base.
_DLIB_MEAN_FACE = np.array(
    [
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.6460604764104, 0.2289674387677],
        [0.8595674595992, 0.2134981538014],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True, slots=True)
class ChipTemplate:
    name: str
    size: int


TEMPLATES = {"arcface": ChipTemplate("arcface", 112), "dlib": ChipTemplate("dlib", 150)}


@dataclass(frozen=True, slots=True, eq=False)
class FaceChip:
    """An aligned face crop (RGB uint8) and the 2×3 transform image → chip that made it."""

    image: np.ndarray = field(repr=False)
    transform: np.ndarray = field(repr=False)
    template: str
    landmark_source: str  # "mesh" or "keypoints"


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src → dst, 2×3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0  # a reflection is never a valid face alignment
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def dlib_template(size: int = 150, padding: float = 0.25) -> np.ndarray:
    return (padding + _DLIB_MEAN_FACE) / (2 * padding + 1) * size


def _arcface_points(det: Detection, mesh: FaceMesh | None) -> tuple[np.ndarray, np.ndarray]:
    if mesh is not None:
        p = mesh.points[:, :2]
        right_eye = p[[lm.RIGHT_EYE_OUTER, lm.RIGHT_EYE_INNER, lm.RIGHT_EYE_TOP, lm.RIGHT_EYE_BOTTOM]].mean(0)
        left_eye = p[[lm.LEFT_EYE_OUTER, lm.LEFT_EYE_INNER, lm.LEFT_EYE_TOP, lm.LEFT_EYE_BOTTOM]].mean(0)
        src = np.stack([right_eye, left_eye, p[lm.NOSE_TIP], p[lm.MOUTH_RIGHT], p[lm.MOUTH_LEFT]])
        return src, ARCFACE_112
    k = det.keypoints
    src = np.stack([k[KP_RIGHT_EYE], k[KP_LEFT_EYE], k[KP_NOSE], k[KP_MOUTH]])
    dst = np.vstack([ARCFACE_112[:3], ARCFACE_112[3:].mean(0)])
    return src, dst


def _dlib_points(det: Detection, mesh: FaceMesh | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    dst = dlib_template(size)
    if mesh is not None:
        p = mesh.points[:, :2]
        idx = [lm.RIGHT_EYE_OUTER, lm.RIGHT_EYE_INNER, lm.LEFT_EYE_INNER, lm.LEFT_EYE_OUTER, lm.NOSE_BASE]
        return p[idx], dst
    # Keypoints only: eye centres match the midpoints of dlib's corner pairs; the nose tip is not
    # dlib's nose base, so it is left out rather than mapped onto the wrong point.
    k = det.keypoints
    src = np.stack([k[KP_RIGHT_EYE], k[KP_LEFT_EYE]])
    dst2 = np.stack([dst[0:2].mean(0), dst[2:4].mean(0)])
    return src, dst2


class Aligner:
    """`aligner(rgb_image, detection, mesh=None) -> FaceChip` for one template."""

    def __init__(self, template: str) -> None:
        if template not in TEMPLATES:
            raise ValueError(f"unknown chip template {template!r}; valid: {', '.join(TEMPLATES)}")
        self.template = TEMPLATES[template]

    def __call__(self, image: np.ndarray, det: Detection, mesh: FaceMesh | None = None) -> FaceChip:
        size = self.template.size
        if self.template.name == "arcface":
            src, dst = _arcface_points(det, mesh)
        else:
            src, dst = _dlib_points(det, mesh, size)
        m = umeyama(src, dst)
        chip = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return FaceChip(chip, m, self.template.name, "mesh" if mesh is not None else "keypoints")
