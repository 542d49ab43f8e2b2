"""Multi-face tracking: which detection in this frame is which face from the last frames.

Our own small tracker rather than a library: norfair 2.3 (the usual choice) pins numpy < 2,
which the gallery's bit-count search needs, and ByteTrack ports bring scipy/torch or GUI
OpenCV. Faces at a door are few (≤ max_faces) and move smoothly, so a constant-velocity
predictor per track plus greedy matching on overlap and centre distance is enough — and it
costs microseconds (measured in `bench/pipeline.py` as the `track` stage).

Time is the source's clock (`Frame.t`), so a file replayed faster than real time tracks the
same as it would live. A scene cut (a mean grey-level jump of a thumbnail) ends every track:
the same place in the next shot is a different person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.config import TrackConfig
from edge.perception.detect import Detection

Box = tuple[float, float, float, float]
# Velocity smoothing: new estimate = (1 - GAIN) * old + GAIN * observed.
VELOCITY_GAIN = 0.5
# A detection also continues a track when its centre is this close (in face widths) to the
# predicted centre: small, fast faces can lose all overlap between two frames.
CENTRE_GATE = 0.6
# Size change allowed between a track and a detection it continues.
MAX_SCALE_CHANGE = 1.8


@dataclass(slots=True, eq=False)
class Track:
    track_id: int
    box: Box
    first_t: float  # source clock of the first detection
    first_mono: float  # monotonic capture time of the first frame it was seen in
    first_ts: float  # wall-clock capture time of that frame
    last_t: float
    hits: int = 1
    missed: int = 0
    detection: Detection | None = field(default=None, repr=False)  # this frame's, None if predicted
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float64), repr=False)
    confirmed: bool = False
    score: float = 0.0  # the last detection's confidence

    def predicted(self, t: float) -> Box:
        dt = max(0.0, t - self.last_t)
        cx, cy, w, h = _cxcywh(self.box)
        vx, vy, vw, vh = self.velocity
        w2, h2 = max(1.0, w + vw * dt), max(1.0, h + vh * dt)
        return _box(cx + vx * dt, cy + vy * dt, w2, h2)


def _cxcywh(box: Box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def _box(cx: float, cy: float, w: float, h: float) -> Box:
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _affinity(pred: Box, det: Box, min_iou: float) -> float:
    """How well a detection continues a predicted box; 0 = it cannot."""
    overlap = iou(pred, det)
    pcx, pcy, pw, _ = _cxcywh(pred)
    dcx, dcy, dw, _ = _cxcywh(det)
    scale = max(pw, dw) / max(1.0, min(pw, dw))
    if scale > MAX_SCALE_CHANGE:
        return 0.0
    dist = np.hypot(pcx - dcx, pcy - dcy) / max(1.0, pw)
    if overlap < min_iou and dist > CENTRE_GATE:
        return 0.0
    return overlap + max(0.0, 1.0 - dist / CENTRE_GATE) * 0.5


class SceneCut:
    """Flags a cut when a ~64-wide grey thumbnail changes by more than `threshold` on average.

    The thumbnail is taken by striding, not by area-averaging: INTER_AREA over a 1080p frame
    cost ~2 ms a frame, striding ~0.05 ms, and a cut changes every sample anyway.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._last: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> bool:
        if self.threshold <= 0:
            return False
        step = max(1, image.shape[1] // 64)
        sample = np.ascontiguousarray(image[step // 2 :: step, step // 2 :: step])
        thumb = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY).astype(np.int16)
        if self._last is not None and self._last.shape != thumb.shape:
            cut = True  # the frame size changed (a folder of mixed stills, a camera mode change)
        else:
            cut = self._last is not None and float(np.abs(thumb - self._last).mean()) > self.threshold
        self._last = thumb
        return cut


class Tracker:
    """`update(detections, t, ...)` once per detected frame, `predict(t)` on frames in between."""

    def __init__(self, cfg: TrackConfig) -> None:
        self.cfg = cfg
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: list[Detection], t: float, mono: float, ts: float) -> list[Track]:
        """Matches detections to tracks; returns the tracks that ended (lost) at this frame."""
        pairs = []
        for ti, track in enumerate(self.tracks):
            pred = track.predicted(t)
            for di, det in enumerate(detections):
                score = _affinity(pred, det.box, self.cfg.min_iou)
                if score > 0:
                    pairs.append((score, ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _score, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._observe(self.tracks[ti], detections[di], t)
        for ti, track in enumerate(self.tracks):
            if ti not in used_t:
                track.detection = None
                track.missed += 1
        for di, det in enumerate(detections):
            if di not in used_d:
                self.tracks.append(Track(self._next_id, det.box, t, mono, ts, t, detection=det, score=det.score))
                self._next_id += 1
        for track in self.tracks:
            track.confirmed = track.confirmed or track.hits >= self.cfg.min_hits
        return self._expire(t)

    def predict(self, t: float) -> list[Track]:
        """A frame without detection: boxes move on their velocity; returns the tracks lost."""
        for track in self.tracks:
            track.detection = None
        return self._expire(t)

    def reset(self) -> list[Track]:
        """Scene cut or stream gap: every track ends."""
        ended, self.tracks = self.tracks, []
        return ended

    def _observe(self, track: Track, det: Detection, t: float) -> None:
        dt = t - track.last_t
        if dt > 0:
            old = np.array(_cxcywh(track.box))
            new = np.array(_cxcywh(det.box))
            observed = (new - old) / dt
            track.velocity = (1 - VELOCITY_GAIN) * track.velocity + VELOCITY_GAIN * observed
        track.box = det.box
        track.detection = det
        track.score = det.score
        track.last_t = t
        track.hits += 1
        track.missed = 0

    def _expire(self, t: float) -> list[Track]:
        limit = self.cfg.max_missed_ms / 1000.0
        ended = [tr for tr in self.tracks if t - tr.last_t > limit or (not tr.confirmed and tr.missed > 0)]
        if ended:
            self.tracks = [tr for tr in self.tracks if tr not in ended]
        return ended
