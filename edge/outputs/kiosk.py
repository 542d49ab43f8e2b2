"""Who is in front of each camera now, and the unknown faces a kiosk may turn into enrollments.

The inference thread writes (`update` per frame, `decided` per decision); the ZeroMQ control
thread reads (`identify`, `take`). An unknown face's embeddings — the very samples its
decision was made on — are held in memory under a random `request_id` for `ttl_s` after the
face was last seen, never written anywhere; `enroll` consumes them.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.video.decide import Decision, Sample

# Only "nobody matched" is enrollable: a face that failed the quality gate or the vote is not
# good enough evidence to build a person from.
ENROLLABLE = ("no_match",)


@dataclass(slots=True)
class Held:
    camera: str
    track_id: int
    samples: list[Sample] = field(repr=False)
    expires: float  # monotonic


@dataclass(frozen=True, slots=True)
class InView:
    track_id: int
    area: float  # box area in pixels: the largest face is the one at the kiosk
    decision: dict[str, Any] | None  # None: not decided yet
    request_id: str | None


class Presence:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Condition()
        self._views: dict[str, list[InView]] = {}
        self._labels: dict[tuple[str, int], tuple[dict[str, Any], str | None]] = {}
        self._held: dict[str, Held] = {}

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._views)

    def add_camera(self, camera: str) -> None:
        with self._lock:
            self._views.setdefault(camera, [])

    def decided(self, decision: Decision, samples: list[Sample]) -> str | None:
        """Records a decision; returns the request id when the face is enrollable."""
        request_id = None
        if decision.decision == "unknown" and decision.reason in ENROLLABLE and any(s.ok for s in samples):
            request_id = secrets.token_hex(8)
            with self._lock:
                self._held[request_id] = Held(decision.camera, decision.track_id, samples, time.monotonic() + self.ttl_s)
        with self._lock:
            self._labels[(decision.camera, decision.track_id)] = (_summary(decision), request_id)
            self._lock.notify_all()
        return request_id

    def update(self, camera: str, tracks: list[tuple[int, tuple[float, float, float, float]]]) -> None:
        """The confirmed tracks in view of `camera` now (id, box)."""
        now = time.monotonic()
        with self._lock:
            views = []
            for track_id, (x1, y1, x2, y2) in tracks:
                label, request_id = self._labels.get((camera, track_id), (None, None))
                views.append(InView(track_id, (x2 - x1) * (y2 - y1), label, request_id))
                if request_id in self._held:
                    self._held[request_id].expires = now + self.ttl_s  # still here: keep holding
            gone = {tid for (cam, tid) in self._labels if cam == camera} - {v.track_id for v in views}
            for track_id in gone:
                del self._labels[(camera, track_id)]
            self._views[camera] = views
            for rid in [r for r, h in self._held.items() if h.expires < now]:
                del self._held[rid]
            self._lock.notify_all()

    def identify(self, camera: str, wait_s: float) -> InView | None:
        """The largest face in view, waiting up to `wait_s` for one that is decided."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                views = sorted(self._views.get(camera, []), key=lambda v: v.area, reverse=True)
                if views and views[0].decision is not None:
                    return views[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return views[0] if views else None
                self._lock.wait(left)

    def held(self, request_id: str) -> Held | None:
        with self._lock:
            held = self._held.get(request_id)
            return held if held is not None and held.expires >= time.monotonic() else None

    def enrolled(self, request_id: str, person: str) -> None:
        """The request became `person`: drop the embeddings; the face in view now answers as them."""
        with self._lock:
            held = self._held.pop(request_id, None)
            if held is None:
                return
            key = (held.camera, held.track_id)
            if key in self._labels:
                label = dict(self._labels[key][0], decision="enrolled", person=person, reason="enrolled")
                self._labels[key] = (label, None)
                self._views[held.camera] = [
                    InView(v.track_id, v.area, label, None) if v.track_id == held.track_id else v
                    for v in self._views.get(held.camera, [])
                ]
            self._lock.notify_all()

    def embeddings(self, held: Held) -> tuple[list[np.ndarray], list[float]]:
        good = [s for s in held.samples if s.ok]
        return [s.embedding for s in good], [s.quality for s in good]


def _summary(d: Decision) -> dict[str, Any]:
    return {"decision": d.decision, "person": d.person, "score": None if d.score is None else round(d.score, 4),
            "reason": d.reason, "track_id": d.track_id, "ts": round(d.ts, 3)}
