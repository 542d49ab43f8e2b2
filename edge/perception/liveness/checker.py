"""Liveness per track: passive CNN on a few frames + multi-frame cues + optional challenge.

`Liveness(cfg, store).new_track()` gives a `TrackLiveness`; the decision path calls
`add(frame, face, ts)` for every frame of the track (cheap: landmark geometry, and a reference
to the frame when it is among its window's best so far) and `result()` when it decides. The track
is judged by its weakest window of WINDOW_FRAMES frames: when a window fills, the CNN runs on its
`passive_frames` best-quality frames (and the second model when uncertain), the frames are
released and only the weakest window's scores are kept; the open window is scored lazily in
`result()`, cached. A track costs `passive_frames` × (number of models) forward passes per window.

Fusion: the score is sigmoid(Σ logit(cue)) over the passive CNN score and the cue scores of
edge.perception.liveness.cues, each weighted 1 (naive-Bayes style: a cue at 0.5 adds nothing, a cue at
0.1 subtracts 2.2 log-odds). `live` = score >= threshold (from `[liveness] threshold`, or from
the calibration table for `target_apcer`) and, with a challenge configured, the challenge
passed. A track with no usable frame is not live (fail secure).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.errors import ConfigError
from edge.perception.faces import Face
from edge.perception.liveness import cues
from edge.perception.liveness.model import PassiveModel
from edge.perception.modelstore import ModelStore

# Homography fits use every 6th FaceMesh point (78 points spread over the whole face): the fit
# is over-determined 17×, and 6× fewer points keep a fit under 0.1 ms.
PLANAR_POINTS = slice(0, 468, 6)
PLANAR_REFERENCES = 8  # earlier meshes kept to measure motion against
PLANAR_STRIDE = 2
EPS = 1e-4
FUSED = ("passive", "glare", "moire", "blink", "planar")
# The other MiniFASNet, asked when a track's score is close to the threshold: a different
# architecture and context scale (2.7x vs 4.0x) fails on different images.
SECOND_OPINION = {"v1se": "v2", "v2": "v1se"}
# A track is judged by its weakest window of WINDOW_FRAMES frames, not by its best frame: a
# phone replay's best-quality frame is the one the CNN is least sure of (zubaircrackscode
# fake.mp4: the whole clip's best frame 0.84, its windows 0.005-0.84), and a live face stays
# live in every window. 10 frames is what the runtime decides a short look on, and what
# `eval liveness --videos` reports as windows.
WINDOW_FRAMES = 10


def logit(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


# The hand-made cues (glare, moiré, blink, planar) may lower the score by at most
# logit(0.15) = -1.7 each: stage lights or a bright arcade can push glare to 0.002 on a real
# face (crowd clip, passive CNN 0.995), and one weak cue must not veto the CNN on its own.
CUE_FLOOR = 0.15


def fuse(scores: dict[str, float]) -> float:
    z = sum(logit(scores[k] if k == "passive" else max(scores[k], CUE_FLOOR)) for k in FUSED if k in scores)
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


@dataclass(frozen=True, slots=True)
class LivenessResult:
    score: float  # fused, 0..1, higher = more likely live
    live: bool  # score >= threshold (and the challenge passed, when one is configured)
    threshold: float
    cues: dict[str, float]  # each cue's score (docs/liveness.md); 0.5 = no evidence
    frames: int  # frames that contributed
    challenge: str | None = None  # "passed" / "failed" (not yet passed) / None (no challenge)

    def to_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 4),
            "live": self.live,
            "threshold": round(self.threshold, 4),
            "cues": {k: round(v, 4) for k, v in self.cues.items()},
            "frames": self.frames,
            "challenge": self.challenge,
        }


def load_liveness(cfg: Config, store: ModelStore) -> Liveness | None:
    """The liveness checker when `[liveness] enabled`, else None (no track is ever `spoof`)."""
    return Liveness(cfg, store) if cfg.liveness.enabled else None


def threshold_for(cfg: Config) -> float:
    """`[liveness] threshold`, or the calibrated threshold for `target_apcer` (log-interpolated)."""
    lv = cfg.liveness
    if lv.target_apcer <= 0.0:
        return lv.threshold
    path = Path(lv.calibration)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"liveness.calibration: cannot read {path} ({exc})") from exc
    key = f"{lv.model}_{lv.precision}"
    entry = table.get("liveness", {}).get(key)
    if not entry:
        raise ConfigError(f"liveness.calibration: {path} has no [liveness.{key}] table; run `facegate eval liveness --calibrate`")
    points = sorted((float(a), float(t)) for a, t in zip(entry["apcer"], entry["threshold"], strict=True))
    apcers = [math.log(a) for a, _ in points]
    return float(np.interp(math.log(lv.target_apcer), apcers, [t for _, t in points]))


@dataclass(slots=True)
class _Candidate:
    """A frame kept for the CNN and the pixel cues."""

    rank: tuple[bool, float]
    image: np.ndarray = field(repr=False)  # the frame, by reference (see TrackLiveness.add)
    box: tuple[float, float, float, float]
    scores: dict[str, float] | None = None
    second: float | None = None


@dataclass(slots=True)
class _Geometry:
    ears: list[float] = field(default_factory=list)
    yaws: list[float] = field(default_factory=list)
    references: list[np.ndarray] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    last_fit: int = -PLANAR_STRIDE  # mesh count at the last homography fit


class Liveness:
    """Shared per process: the passive model and the thresholds; `new_track()` per track."""

    def __init__(self, cfg: Config, store: ModelStore) -> None:
        self.cfg = cfg.liveness
        backend = cfg.models.backend
        self.passive = PassiveModel.from_store(store, self.cfg.model, self.cfg.precision, cfg.models.threads, backend)
        self.second: PassiveModel | None = None
        if self.cfg.recheck_margin > 0.0 and self.cfg.model in SECOND_OPINION:
            self.second = PassiveModel.from_store(
                store, SECOND_OPINION[self.cfg.model], self.cfg.precision, cfg.models.threads, backend
            )
        self.threshold = threshold_for(cfg)

    def new_track(self) -> TrackLiveness:
        return TrackLiveness(self)

    def frame_scores(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> dict[str, float]:
        """Single-frame cue scores (passive CNN, glare, moiré) of one face."""
        return self._scores(self.passive.crops(rgb, box), cues.face_region(rgb, box))

    def _scores(self, crops: list[np.ndarray], region: np.ndarray) -> dict[str, float]:
        return {
            "passive": self.passive.score(crops),
            "glare": cues.glare_score(region)[0],
            "moire": cues.moire_score(region)[0],
        }

    def crop_score(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None, bgr: bool = False) -> float:
        """Fused single-frame score of a face in `image` (RGB; `bgr=True` for OpenCV order).

        `box` None = the whole image is the face box (tight face crops): the CNN then sees the
        face without its surroundings, see docs/liveness.md for what that costs.
        """
        rgb = image[:, :, ::-1] if bgr else image
        if box is None:
            box = (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
        return fuse(self.frame_scores(rgb, box))


class TrackLiveness:
    """One track's evidence. Frames arrive in windows of WINDOW_FRAMES: the open window keeps its
    `passive_frames` best frames by reference; when it is full they are scored (CNN, pixel cues,
    the re-check when uncertain) and released, and only the weakest window's cue scores are kept,
    so a track of any length holds one window of frames and one set of scores."""

    def __init__(self, owner: Liveness) -> None:
        self._owner = owner
        self._cfg = owner.cfg
        self._frames = 0
        self._candidates: list[_Candidate] = []  # the open window's kept frames
        self._in_window = 0  # frames of the open window so far
        self._weakest: dict[str, float] | None = None  # frame cues of the weakest closed window
        self._geo = _Geometry()

    def add(self, image: np.ndarray, face: Face, ts: float) -> None:
        """One frame of the track. The frames that rank among their window's `passive_frames`
        best are kept by reference until the window is scored (no copy, no crop until then): do
        not draw into a frame after handing it over."""
        self._frames += 1
        box = face.detection.box
        if face.mesh is not None:
            self._add_geometry(face.mesh.points)
        self._keep(image, box, (face.quality.ok, float(face.quality.score)))

    def add_still(self, image: np.ndarray, box: tuple[float, float, float, float]) -> None:
        """One still image with no landmarks (a labelled face crop, `box` = the whole image):
        a frame for the CNN and the pixel cues only; blink and planar stay neutral, as they
        do for any one-frame track. `facegate eval liveness` decides crops this way."""
        self._frames += 1
        self._keep(image, box, (True, 1.0))

    def _keep(self, image: np.ndarray, box: tuple[float, float, float, float], rank: tuple[bool, float]) -> None:
        keep = self._cfg.passive_frames
        if len(self._candidates) < keep or rank > self._candidates[-1].rank:
            self._candidates.append(_Candidate(rank, image, box))
            self._candidates.sort(key=lambda c: c.rank, reverse=True)
            del self._candidates[keep:]
        self._in_window += 1
        if self._in_window >= WINDOW_FRAMES:
            closed = self._window_cues(self._track_cues())
            if self._weakest is None or fuse(closed) < fuse(self._weakest):
                self._weakest = closed
            self._candidates, self._in_window = [], 0  # the frames go; their scores stay

    def _add_geometry(self, points: np.ndarray) -> None:
        geo = self._geo
        geo.ears.append(cues.eye_aspect_ratio(points))
        geo.yaws.append(cues.yaw_deg(points))
        pts = points[PLANAR_POINTS, :2].astype(np.float64)
        iod = max(cues.eye_distance(points), 1e-6)
        if not geo.references:
            geo.references.append(pts)
            return
        # Mean landmark displacement against every kept reference pose, in inter-ocular distances.
        motions = np.sqrt(((np.stack(geo.references) - pts) ** 2).sum(axis=2)).mean(axis=1) / iod
        j = int(np.argmax(motions))
        # At most every PLANAR_STRIDE-th mesh: consecutive frames fitted against the same
        # reference give nearly the same residual, and a fit is the costliest step of add().
        if motions[j] >= cues.PLANAR_MIN_MOTION and len(geo.ears) - geo.last_fit >= PLANAR_STRIDE:
            geo.residuals.append(cues.homography_residual(geo.references[j], pts) / iod)
            geo.last_fit = len(geo.ears)
        # Keep a spread of earlier poses: the first mesh, then one whenever the face has moved.
        if float(motions.min()) >= cues.PLANAR_MIN_MOTION / 2:
            geo.references.append(pts)
            del geo.references[1 : max(1, len(geo.references) - PLANAR_REFERENCES + 1)]

    def _challenge(self) -> str | None:
        if self._cfg.challenge == "none":
            return None
        yaws = self._geo.yaws
        turned = bool(yaws) and max(yaws) - min(yaws) >= self._cfg.challenge_yaw_deg
        return "passed" if turned else "failed"

    def _track_cues(self) -> dict[str, float]:
        """The cues measured over the whole track (FaceMesh geometry)."""
        return {"blink": cues.blink_score(self._geo.ears, self._geo.yaws), "planar": cues.planar_score(self._geo.residuals)}

    def _window_cues(self, track_cues: dict[str, float]) -> dict[str, float]:
        """The open window's frame cues (CNN, glare, moiré): mean log-odds over its kept frames, so
        one odd frame cannot decide alone; re-checked by the second model when the window's score
        with the track's cues is within `recheck_margin` of the threshold."""
        for cand in self._candidates:
            if cand.scores is None:
                cand.scores = self._owner.frame_scores(cand.image, cand.box)
        frame_cues: dict[str, float] = {}
        for name in ("passive", "glare", "moire"):
            z = float(np.mean([logit(c.scores[name]) for c in self._candidates if c.scores]))
            frame_cues[name] = 1.0 / (1.0 + math.exp(-z))
        if self._owner.second is not None and abs(fuse({**frame_cues, **track_cues}) - self._owner.threshold) < self._cfg.recheck_margin:
            frame_cues = self._recheck(frame_cues)
        return frame_cues

    def _recheck(self, scores: dict[str, float]) -> dict[str, float]:
        """Uncertain window: the second model scores the same kept frames; `passive` becomes the
        geometric mean of both models (as `model = "both"` computes it) and `passive_second`
        reports the second model's own score."""
        second = self._owner.second
        assert second is not None
        for cand in self._candidates:
            if cand.second is None:
                cand.second = second(cand.image, cand.box)
        z = float(np.mean([logit(c.second) for c in self._candidates if c.second is not None]))
        p2 = 1.0 / (1.0 + math.exp(-z))
        return {**scores, "passive": math.sqrt(scores["passive"] * p2), "passive_second": p2}

    def result(self) -> LivenessResult:
        """The track's liveness: its weakest window's frame cues with the whole track's blink and
        planar cues. The open window counts while no window has closed, or once it holds half a
        window (a frame or two after a full window is too little to judge alone)."""
        threshold = self._owner.threshold
        challenge = self._challenge()
        track_cues = self._track_cues()
        windows = [] if self._weakest is None else [self._weakest]
        if self._candidates and (self._weakest is None or 2 * self._in_window >= WINDOW_FRAMES):
            windows.append(self._window_cues(track_cues))
        if not windows:
            return LivenessResult(0.0, False, threshold, {}, 0, challenge)
        scores = {**min(windows, key=fuse), **track_cues}
        score = fuse(scores)
        live = score >= threshold and challenge != "failed"
        return LivenessResult(score, live, threshold, scores, self._frames, challenge)
