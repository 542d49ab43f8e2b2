"""Face quality: is this face worth an embedding, and if not, why not.

Every measure is cheap and explainable, because an operator must be able to act on the reason
("too small: move the camera closer", "underexposed: add light"):
- size: inter-ocular distance in image pixels (what the embedder's input resolution depends on);
- sharpness: variance of the Laplacian on the aligned chip, so it is comparable across scales;
- pose: yaw from how far the nose tip sits off the eye midpoint (the tip stands ~0.95 half
  eye-distances in front of the eye plane, so offset = 0.95·tan(yaw)), pitch from where it sits
  between the eye line and the mouth, both in the eye-levelled frame (a geometric estimate,
  ±10°; the ear keypoints are not used: the hidden ear collapses onto the cheek when turned);
- exposure: mean luminance of the chip and the share of clipped pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import QualityConfig
from edge.perception.align import FaceChip
from edge.perception.detect import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, Detection

# Nose position between eye line (0) and mouth (1) on a frontal face, measured on LFW.
UNCONFIRMED = "unconfirmed"  # the reason given when FaceMesh finds no face in the box
_FRONTAL_NOSE_RATIO = 0.55
# Depth of the nose tip in front of the eye plane, in half inter-ocular distances.
_NOSE_DEPTH = 0.95


@dataclass(frozen=True, slots=True)
class Quality:
    score: float  # 0..1, higher is better; used to rank frames of one track
    eye_distance_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    brightness: float
    clipped_fraction: float
    reasons: tuple[str, ...]  # empty when the face passes every gate

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def confirmed(self) -> bool:
        """FaceMesh saw a face in the box (whatever else the gate says about it)."""
        return not any(r.startswith(UNCONFIRMED) for r in self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 4),
            "eye_distance_px": round(self.eye_distance_px, 1),
            "sharpness": round(self.sharpness, 1),
            "yaw_deg": round(self.yaw_deg, 1),
            "pitch_deg": round(self.pitch_deg, 1),
            "brightness": round(self.brightness, 1),
            "clipped_fraction": round(self.clipped_fraction, 4),
            "ok": self.ok,
            "reasons": list(self.reasons),
        }


def estimate_pose(keypoints: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from BlazeFace's 6 keypoints; positive yaw = subject turns left."""
    right_eye, left_eye = keypoints[KP_RIGHT_EYE], keypoints[KP_LEFT_EYE]
    axis = left_eye - right_eye
    angle = math.atan2(axis[1], axis[0])
    c, s = math.cos(-angle), math.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    p = (keypoints - (right_eye + left_eye) / 2) @ rot.T  # eye midpoint at origin, eyes level
    half_eyes = max(float(np.hypot(*axis)) / 2, 1e-6)
    yaw = math.degrees(math.atan2(p[KP_NOSE, 0] / half_eyes, _NOSE_DEPTH))
    mouth_drop = p[KP_MOUTH, 1]
    v = p[KP_NOSE, 1] / mouth_drop if abs(mouth_drop) > 1e-6 else _FRONTAL_NOSE_RATIO
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, 2.0 * (v - _FRONTAL_NOSE_RATIO)))))
    return yaw, pitch


def _soft(value: float, limit: float, good: float) -> float:
    """1 at `good` or better, falling linearly to 0 at `limit`."""
    if good == limit:
        return 1.0
    return float(min(1.0, max(0.0, (value - limit) / (good - limit))))


class QualityGate:
    """`gate(detection, chip) -> Quality` with the limits from `[quality]`."""

    def __init__(self, limits: QualityConfig | None = None) -> None:
        self.limits = limits or QualityConfig()

    def __call__(self, det: Detection, chip: FaceChip, landmarks_confirmed: bool = True) -> Quality:
        lim = self.limits
        kp = det.keypoints
        eye_px = float(np.linalg.norm(kp[KP_LEFT_EYE] - kp[KP_RIGHT_EYE]))
        grey = cv2.cvtColor(chip.image, cv2.COLOR_RGB2GRAY)
        # Centre 70% of the chip: background corners say nothing about the face.
        h, w = grey.shape
        core = grey[int(h * 0.15) : int(h * 0.85), int(w * 0.15) : int(w * 0.85)]
        sharpness = float(cv2.Laplacian(core, cv2.CV_32F).var())
        brightness = float(core.mean())
        clipped = float(((core <= 5) | (core >= 250)).mean())
        yaw, pitch = estimate_pose(kp)

        reasons = []
        if not landmarks_confirmed:
            reasons.append(f"{UNCONFIRMED}: the landmark model sees no face in this box")
        if eye_px < lim.min_eye_distance_px:
            reasons.append(f"too_small: eyes {eye_px:.0f} px apart < {lim.min_eye_distance_px:.0f}")
        if sharpness < lim.min_sharpness:
            reasons.append(f"blurry: sharpness {sharpness:.0f} < {lim.min_sharpness:.0f}")
        if abs(yaw) > lim.max_yaw_deg:
            reasons.append(f"turned: yaw {yaw:+.0f}° beyond ±{lim.max_yaw_deg:.0f}°")
        if abs(pitch) > lim.max_pitch_deg:
            reasons.append(f"tilted: pitch {pitch:+.0f}° beyond ±{lim.max_pitch_deg:.0f}°")
        if brightness < lim.min_brightness:
            reasons.append(f"underexposed: brightness {brightness:.0f} < {lim.min_brightness:.0f}")
        if brightness > lim.max_brightness:
            reasons.append(f"overexposed: brightness {brightness:.0f} > {lim.max_brightness:.0f}")
        if clipped > lim.max_clipped_fraction:
            reasons.append(f"clipped: {clipped:.0%} of face pixels saturated")

        score = (
            _soft(eye_px, lim.min_eye_distance_px, 3 * lim.min_eye_distance_px)
            * _soft(sharpness, lim.min_sharpness, 4 * lim.min_sharpness)
            * _soft(-abs(yaw), -lim.max_yaw_deg, -10.0)
            * _soft(-abs(pitch), -lim.max_pitch_deg, -10.0)
            * _soft(-abs(brightness - 128.0), -max(128.0 - lim.min_brightness, lim.max_brightness - 128.0), -40.0)
            * det.score
            * (1.0 if landmarks_confirmed else 0.5)
        )
        return Quality(score, eye_px, sharpness, yaw, pitch, brightness, clipped, tuple(reasons))
