"""Liveness cues besides the CNN: each a score in 0..1 where 0.5 means "no evidence".

A cue only moves the fused score when it has seen something: a cue that cannot observe its
phenomenon (too few frames, no motion, eyes not visible) answers exactly 0.5, whose log-odds
are 0 and leave the fusion unchanged. Most cues can only argue one way, because absence of
the phenomenon proves nothing (a matte print has no glare; a live person need not blink within
a second):

- `blink` (multi-frame, FaceMesh, >= 0.5): the eye aspect ratio (lid gap / eye width, both
  eyes) falls below BLINK_DROP of the track's open-eye level and comes back. A photo cannot
  blink; a replayed video can, so this is weak live evidence.
- `planar` (multi-frame, FaceMesh, <= 0.5): a photo or a screen moves as a plane, so the mesh
  points of two frames are related by one homography up to landmark noise, while a real head
  that turns shows parallax (nose against cheeks) no homography explains. Evidence only once the
  face moved enough for parallax to show; a replayed *video* of a turning head is not planar
  in its landmarks, so this catches photos and still images on screens, not video replays.
- `glare` (single frame, pixels, <= 0.5): share of near-white, unsaturated pixels in the face
  region beyond what skin highlights cover — specular reflection off glass or glossy paper
  spreads over large areas; skin scatters most light diffusely.
- `moire` (single frame, pixels, <= 0.5): the strongest narrow peak of the face region's
  high-frequency spectrum against that band's median — the screen's pixel grid beating
  against the camera's sensor grid leaves periodic patterns; skin texture is broadband.
- challenge `turn_head` (active, FaceMesh): the yaw over the track spans at least the
  configured angle. Not a score: a pass/fail state the result reports.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge.perception import landmarks as lm

# FaceMesh eye contours: outer corner, two upper lid points, inner corner, two lower lid points.
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (263, 387, 385, 362, 380, 373)
BLINK_DROP = 0.65  # closed-eye EAR relative to the open level (open ≈ 0.25-0.30, closed < 0.15)
BLINK_SCORE = 0.75  # weak: replays blink too
MIN_FRAMES = 4
# Yaw the head may sweep over a dip of the eye aspect ratio (with an open frame each side) for the
# dip to count as a blink: a blink takes 100-400 ms, FaceMesh yaw jitters by a few degrees, and
# the turns that faked blinks swept 35-38° (see `blinked`).
BLINK_MAX_YAW_SWING_DEG = 10.0
# Parallax needs motion: pairs whose mean landmark displacement is below this share of the
# inter-ocular distance are not informative (landmark noise ~0.01 would dominate).
PLANAR_MIN_MOTION = 0.08
# Mean homography residual, in inter-ocular distances, that a turning head exceeds and a plane
# (with FaceMesh noise) stays under; residual far below it is planar evidence.
PLANAR_RESIDUAL = 0.02
# Near-white, unsaturated: HSV value >= GLARE_V, saturation <= GLARE_S (0..255).
GLARE_V, GLARE_S = 235, 40
# Skin under strong light (stage spots, sweat) shows small specular spots: up to ~2.5 % of the
# face region measured on live stage footage. Only glare beyond this allowance is evidence; a
# reflection off a screen or glossy print typically covers 5-25 %.
GLARE_ALLOWANCE = 0.03
GLARE_SCALE = 0.03  # glare beyond the allowance at which the score falls to e^-1 of neutral
GLARE_PIXELS = 128  # glare is measured on a subsample keeping at least this many rows or columns
SPECTRUM_SIZE = 128
# log(peak / median) of the high band that broadband texture stays under: live faces measured
# up to 7.9 (webcam, stage footage); a windowed 128² spectrum of noise alone gives ~3.
MOIRE_PEAK = 8.5
MOIRE_SCALE = 0.5
_NOSE_DEPTH = 0.95  # nose tip in front of the eye plane, in half inter-ocular distances


_EYES = np.array([RIGHT_EYE, LEFT_EYE])


def eye_aspect_ratio(points: np.ndarray) -> float:
    """Mean eye aspect ratio of both eyes from FaceMesh points (~0.28 open, < 0.15 closed)."""
    # Plain floats: twelve points, and numpy's per-call overhead would dominate.
    ratios = []
    for eye in _EYES:
        (ox, oy), (u1x, u1y), (u2x, u2y), (ix, iy), (l2x, l2y), (l1x, l1y) = points[eye, :2].tolist()
        gap = (math.hypot(u1x - l1x, u1y - l1y) + math.hypot(u2x - l2x, u2y - l2y)) / 2.0
        ratios.append(gap / max(math.hypot(ox - ix, oy - iy), 1e-6))
    return sum(ratios) / 2.0


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[lm.RIGHT_EYE_OUTER, :2] - points[lm.LEFT_EYE_OUTER, :2]))


def yaw_deg(points: np.ndarray) -> float:
    """Head yaw from the nose tip's offset from the eye midpoint (signed, degrees)."""
    # Plain floats: three points, and numpy's per-call overhead would dominate.
    (rx, ry), (lx, ly), (nx, ny) = points[[lm.RIGHT_EYE_OUTER, lm.LEFT_EYE_OUTER, lm.NOSE_TIP], :2].tolist()
    ax, ay = lx - rx, ly - ry
    length = max(math.hypot(ax, ay), 1e-6)
    half = length / 2.0
    offset = ((nx - (lx + rx) / 2.0) * ax + (ny - (ly + ry) / 2.0) * ay) / length / half
    return math.degrees(math.atan2(offset, _NOSE_DEPTH))


def blinked(ears: list[float], yaws: list[float] | None = None) -> bool:
    """The eye aspect ratio fell below BLINK_DROP of its open level and came back — with the head
    steady meanwhile when `yaws` (one per ear) are given.

    The aspect ratio is lid gap over eye width, and a fast head swing shrinks the width and moves
    the lid points as a blink does (a live man's turn from 24° to -14° dipped it to 0.21, a
    replay's ~35° turn to 0.18, both counted as blinks): a dip whose frames, with the open frame
    on each side, span BLINK_MAX_YAW_SWING_DEG of yaw or more is the turn, not the lids."""
    if len(ears) < MIN_FRAMES:
        return False
    values = np.asarray(ears)
    open_level = float(np.percentile(values, 80))
    closed = values < BLINK_DROP * open_level
    # A blink is a closed run with open frames on both sides (not a track that starts closed).
    idx = np.flatnonzero(closed)
    for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if idx.size else []:
        start, end = int(run[0]), int(run[-1])
        if start == 0 or end >= len(values) - 1:
            continue
        if yaws is None:
            return True
        around = yaws[start - 1 : end + 2]
        if max(around) - min(around) < BLINK_MAX_YAW_SWING_DEG:
            return True
    return False


def blink_score(ears: list[float], yaws: list[float] | None = None) -> float:
    return BLINK_SCORE if blinked(ears, yaws) else 0.5


def turned(yaws: list[float], min_deg: float) -> bool:
    """The head's yaw spanned at least `min_deg` (what the turn challenges ask)."""
    return bool(yaws) and max(yaws) - min(yaws) >= min_deg


def _normalise(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Hartley normalisation (conditions the DLT): centred, mean distance sqrt(2); and the scale."""
    d = pts - pts.mean(axis=0)
    s = math.sqrt(2.0) / max(float(np.sqrt((d * d).sum(axis=1)).mean()), 1e-9)
    return d * s, s


def homography_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between `b` and `a` mapped by the least-squares homography a -> b.

    Linear least squares with h33 = 1 on Hartley-normalised points: 8 unknowns solved through
    the 8×8 normal equations (one 9-column product gives both sides), ~90 µs against ~300 µs
    for the SVD form. h33 = 1 only excludes maps that send the image centre to infinity, which
    no face motion is. Normalising `b` is a similarity, so distances measured in its frame are
    the image distances times its scale.
    """
    an, _ = _normalise(a)
    bn, scale_b = _normalise(b)
    n = len(a)
    m = np.zeros((2 * n, 9))
    m[:n, 0:2], m[:n, 2] = an, 1.0
    m[n:, 3:5], m[n:, 5] = an, 1.0
    m[:n, 6:8] = an * -bn[:, 0:1]
    m[n:, 6:8] = an * -bn[:, 1:2]
    m[:n, 8], m[n:, 8] = bn[:, 0], bn[:, 1]
    normal = m.T @ m
    try:
        h = np.linalg.solve(normal[:8, :8], normal[:8, 8])
    except np.linalg.LinAlgError:
        return 0.0  # degenerate (all points collinear): nothing a plane could not explain
    x, y = an[:, 0], an[:, 1]
    w = h[6] * x + h[7] * y + 1.0
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    dx = (h[0] * x + h[1] * y + h[2]) / w - bn[:, 0]
    dy = (h[3] * x + h[4] * y + h[5]) / w - bn[:, 1]
    return float(np.sqrt(dx * dx + dy * dy).mean()) / scale_b


def planar_score(residuals: list[float]) -> float:
    """Score from homography residuals (inter-ocular distances) of frame pairs that moved enough.

    At or above the turning-head level: no evidence (0.5); falling quadratically towards 0 for a
    residual of 0, which only a rigid plane gives.
    """
    if not residuals:
        return 0.5
    r = float(np.median(residuals))
    return 0.5 * min(1.0, r / PLANAR_RESIDUAL) ** 2


def face_region(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The detection box (inner 80 %, away from hair and background), clamped to the image."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    l, t = max(int(x1 + mx), 0), max(int(y1 + my), 0)
    r, b = min(int(x2 - mx), w), min(int(y2 - my), h)
    return rgb[t : max(b, t + 1), l : max(r, l + 1)]


def glare_score(region_rgb: np.ndarray) -> tuple[float, float]:
    """(score, share of specular pixels) for an RGB face region."""
    # A share is a proportion: every k-th pixel estimates it unbiasedly (k keeps >= 128 rows or
    # columns), and a 1080p face close to the camera would otherwise convert ~10x the pixels.
    step = max(1, max(region_rgb.shape[:2]) // GLARE_PIXELS)
    hsv = cv2.cvtColor(np.ascontiguousarray(region_rgb[::step, ::step]), cv2.COLOR_RGB2HSV)
    share = float(((hsv[..., 2] >= GLARE_V) & (hsv[..., 1] <= GLARE_S)).mean())
    return 0.5 * math.exp(-max(0.0, share - GLARE_ALLOWANCE) / GLARE_SCALE), share


_WINDOW = np.outer(np.hanning(SPECTRUM_SIZE), np.hanning(SPECTRUM_SIZE)).astype(np.float32)
_f = np.fft.fftfreq(SPECTRUM_SIZE) * 2.0  # cycles per pixel / Nyquist, in cv2.dft's (unshifted) layout
_RADIUS = np.sqrt(_f[None, :] ** 2 + _f[:, None] ** 2)
_HIGH_BAND = (_RADIUS > 0.25) & (_RADIUS < 0.9)


def moire_score(region_rgb: np.ndarray) -> tuple[float, float]:
    """(score, log peak-to-median of the high band) for an RGB face region."""
    grey = cv2.cvtColor(region_rgb, cv2.COLOR_RGB2GRAY)
    # INTER_AREA: downscaling must not alias on its own and invent a peak.
    grey = cv2.resize(grey, (SPECTRUM_SIZE, SPECTRUM_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    grey -= grey.mean()
    spectrum = cv2.dft(grey * _WINDOW, flags=cv2.DFT_COMPLEX_OUTPUT)  # ~4x faster than np.fft here
    power = spectrum[..., 0] ** 2 + spectrum[..., 1] ** 2
    band = power[_HIGH_BAND]
    if float(band.max()) <= 0.0:
        return 0.5, 0.0  # a flat region (covered lens, blown-out face) has no spectrum to judge
    peak = math.log(float(band.max()) / max(float(np.median(band)), 1e-9))
    excess = max(0.0, peak - MOIRE_PEAK)
    return 0.5 * math.exp(-excess / MOIRE_SCALE), peak
