"""One decision per track: collect the best frames, fuse, match, vote, check access, decide.

A single frame is a poor witness (blur, a half-turned head), so each track gathers embeddings
from its frames and decides once it has `[decide] min_frames` frames that pass the quality
gate — or after `max_wait_ms` with what it has, or when it is lost. The quality-weighted mean
of the best frames is matched against the gallery at the calibrated threshold; the frames also
vote one by one, and a grant needs both. Then the person's access is checked (validity window,
consent, the camera's groups) and liveness, when enabled, can turn any outcome into `spoof`.

Decisions: `grant` (known and allowed here), `deny` (known but not allowed), `unknown` (nobody
in the gallery, or not enough evidence), `spoof` (a presentation attack).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.access.rules import CameraRules, person_refusal
from edge.access.rules import Candidate as AccessCandidate
from edge.config import CameraConfig, DecideConfig
from edge.gallery.records import PersonProfile
from edge.gallery.search import Candidate, Gallery, Match
from edge.perception.faces import Face
from edge.video.track import Track

DECISIONS = ("grant", "deny", "unknown", "spoof")


@dataclass(frozen=True, slots=True)
class Decision:
    ts: float  # wall-clock time of the decision, unix seconds
    camera: str
    track_id: int
    decision: str  # one of DECISIONS
    person: str | None  # the matched person (also for deny; None for unknown)
    score: float | None  # fused cosine score against `person` (or the best candidate)
    threshold: float
    reason: str  # why: "match", "no_match", "vote", "low_quality", "not_in_groups", ...
    frames_used: int
    quality: float  # mean quality score of the frames used
    latency_ms: float  # from the capture of the track's first frame to this decision
    # From the capture of the track's first frame that passed the quality gate (None: none
    # did) to this decision: latency_ms minus the time the face was too far, turned or dark.
    usable_latency_ms: float | None
    first_seen: float  # wall-clock capture time of the track's first frame
    source_t: float  # the track's first frame on the source clock (position in a file)
    box: tuple[float, float, float, float]
    models: dict[str, str] = field(default_factory=dict)
    liveness: dict[str, Any] | None = None
    # From the capture of the track's first frame in which FaceMesh confirmed a face (None: it
    # never did — the back of a head, a face-like pattern) to this decision.
    face_latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": round(self.ts, 3),
            "camera": self.camera,
            "track_id": self.track_id,
            "decision": self.decision,
            "person": self.person,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "reason": self.reason,
            "frames_used": self.frames_used,
            "quality": round(self.quality, 3),
            "latency_ms": round(self.latency_ms, 1),
            "usable_latency_ms": None if self.usable_latency_ms is None else round(self.usable_latency_ms, 1),
            "face_latency_ms": None if self.face_latency_ms is None else round(self.face_latency_ms, 1),
            "first_seen": round(self.first_seen, 3),
            "source_t": round(self.source_t, 3),
            "box": [round(v, 1) for v in self.box],
            "models": self.models,
            "liveness": self.liveness,
        }


@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    embedding: np.ndarray = field(repr=False)
    quality: float
    ok: bool  # passed the quality gate


# Source times are frame counts over the frame rate: 3/25 - 2/25 is 0.039999... s in floating
# point, so a wait of exactly one frame interval would wait for the next frame half the time.
_CLOCK_SLACK_MS = 0.5


class Evidence:
    """What one track has gathered so far."""

    def __init__(self, liveness: Any | None) -> None:
        self.samples: list[Sample] = []
        self.first_ok_t: float | None = None  # source time of the first gate-passing frame
        self.first_ok_mono: float | None = None  # and its monotonic capture time
        self.first_face_t: float | None = None  # source time of the first FaceMesh-confirmed frame
        self.first_face_mono: float | None = None  # and its monotonic capture time
        self.liveness = liveness  # a TrackLiveness, or None when liveness is off

    @property
    def n_ok(self) -> int:
        return sum(s.ok for s in self.samples)

    def add(self, face: Face, image: np.ndarray, t: float, mono: float, keep: int) -> None:
        if self.liveness is not None:
            self.liveness.add(image, face, t)
        if self.first_face_mono is None and face.quality.confirmed:
            self.first_face_t, self.first_face_mono = t, mono
        if face.embedding is None:
            return
        if face.quality.ok and self.first_ok_t is None:
            self.first_ok_t, self.first_ok_mono = t, mono
        self.samples.append(Sample(face.embedding, face.quality.score, face.quality.ok))
        # Keep the best frames only: gate-passing first, then by quality score.
        self.samples.sort(key=lambda s: (s.ok, s.quality), reverse=True)
        del self.samples[keep:]

    def used(self) -> list[Sample]:
        ok = [s for s in self.samples if s.ok]
        return ok or self.samples


def fuse(samples: list[Sample]) -> np.ndarray:
    """Quality-weighted mean of unit embeddings, re-normalised."""
    weights = np.array([max(s.quality, 1e-3) for s in samples], np.float32)
    mean = (np.stack([s.embedding for s in samples]) * weights[:, None]).sum(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def access(profile: PersonProfile, camera: CameraConfig, now: float) -> str | None:
    """Why `profile` may not pass at `camera` now, or None if it may (no door rules)."""
    return person_refusal(profile, camera.groups, now)


class Decider:
    """Per camera: evidence per track id, and the decision when a track is due."""

    def __init__(
        self, cfg: DecideConfig, camera: CameraConfig, gallery: Gallery, models: dict[str, str], liveness: Any | None = None
    ) -> None:
        self.cfg = cfg
        self.camera = camera
        self.gallery = gallery
        self.models = models
        self.liveness = liveness  # edge.liveness.Liveness, or None
        self.evidence: dict[int, Evidence] = {}
        self.decided: set[int] = set()
        self._profiles: dict[int, PersonProfile | None] = {}
        # Replaced by the door's rules (schedule, anti-passback, ...) when a [[door]] uses this camera.
        self.rules = CameraRules(camera.groups)

    def wants(self, track: Track) -> bool:
        return track.track_id not in self.decided

    def observe(self, track: Track, face: Face, image: np.ndarray, t: float, mono: float) -> None:
        ev = self.evidence.get(track.track_id)
        if ev is None:
            ev = self.evidence[track.track_id] = Evidence(self.liveness.new_track() if self.liveness else None)
        ev.add(face, image, t, mono, self.cfg.max_frames)

    def due(self, track: Track, t: float) -> bool:
        ev = self.evidence.get(track.track_id)
        if ev is None or track.track_id in self.decided or not track.confirmed:
            return False
        if ev.first_ok_t is None:
            # Nothing the quality gate accepts yet (far away, turned, dark): keep watching
            # rather than decide "unknown" for someone who is still walking up to the door —
            # unless the deployment asked for an answer by a deadline after the face appeared.
            deadline = self.cfg.max_face_wait_ms
            return deadline > 0 and ev.first_face_t is not None and (t - ev.first_face_t) * 1000.0 >= deadline - _CLOCK_SLACK_MS
        waited = (t - ev.first_ok_t) * 1000.0 >= self.cfg.max_wait_ms - _CLOCK_SLACK_MS
        return ev.n_ok >= self.cfg.min_frames or waited

    def decide(self, track: Track) -> tuple[Decision, list[Sample]]:
        """The track's decision and the samples it was made on (for a kiosk's enroll-on-consent)."""
        self.decided.add(track.track_id)
        ev = self.evidence.pop(track.track_id, None) or Evidence(None)
        samples = ev.used()
        live = ev.liveness.result() if ev.liveness is not None else None
        now_mono = time.monotonic()
        outcome, person, score, reason = "unknown", None, None, "no_usable_frame"
        if samples:
            match = self.gallery.identify(fuse(samples), k=5)
            score = match.candidates[0].score if match.candidates else None
            reason = self._why(match, samples)
            # A spoof is refused before the rules run: it must not count as an entry (anti-passback).
            if reason == "match" and (live is None or live.live):
                person = match.person
                outcome, reason = self._access(match.candidates[0], live)
                person = person if outcome != "unknown" else None
        if ev.first_face_mono is None and ev.first_ok_mono is None:
            # FaceMesh never saw a face in this track (the back of a head, a poster's outline):
            # nothing to recognise and nothing to call a spoof.
            outcome, person, reason = "unknown", None, "no_face"
        elif live is not None and not live.live:
            outcome, person, reason = "spoof", None, "liveness"
        decision = Decision(
            ts=time.time(),
            camera=self.camera.name,
            track_id=track.track_id,
            decision=outcome,
            person=person,
            score=score,
            threshold=self.gallery.threshold,
            reason=reason,
            frames_used=len(samples),
            quality=float(np.mean([s.quality for s in samples])) if samples else 0.0,
            latency_ms=(now_mono - track.first_mono) * 1000.0,
            usable_latency_ms=None if ev.first_ok_mono is None else (now_mono - ev.first_ok_mono) * 1000.0,
            first_seen=track.first_ts,
            source_t=track.first_t,
            box=track.box,
            models=self.models,
            liveness=_liveness_dict(live),
            face_latency_ms=None if ev.first_face_mono is None else (now_mono - ev.first_face_mono) * 1000.0,
        )
        return decision, samples

    def forget(self, track: Track) -> None:
        """The track ended; its id will not come back."""
        self.evidence.pop(track.track_id, None)
        self.decided.discard(track.track_id)

    def reload(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self._profiles.clear()

    def _why(self, match: Match, samples: list[Sample]) -> str:
        if match.person is None:
            return "no_match"
        if not any(s.ok for s in samples):
            # Never open a door on frames the quality gate rejected.
            return "low_quality"
        votes = Counter(self.gallery.identify(s.embedding, k=1).person for s in samples)
        if votes[match.person] / len(samples) < self.cfg.min_vote:
            return "vote"
        return "match"

    def _access(self, candidate: Candidate, live: Any | None) -> tuple[str, str]:
        person_id = candidate.person_id
        if person_id not in self._profiles:
            record = self.gallery.store.person(person_id)
            self._profiles[person_id] = record.profile if record is not None else None
        profile = self._profiles[person_id]
        if profile is None:
            return "unknown", "removed"
        live_ok = None if live is None else bool(live.live)
        asked = AccessCandidate(person_id, candidate.person, profile, candidate.score, live_ok, getattr(live, "challenge", None))
        refused = self.rules.check(asked, time.time())
        return ("deny", refused) if refused else ("grant", "match")


def _liveness_dict(live: Any | None) -> dict[str, Any] | None:
    if live is None:
        return None
    # The cues and the challenge state go along so an audit can tell why a track was refused.
    return {
        "score": round(float(live.score), 4),
        "live": bool(live.live),
        "threshold": round(float(live.threshold), 4),
        "cues": {k: round(float(v), 4) for k, v in live.cues.items()},
        "frames": int(live.frames),
        "challenge": live.challenge,
    }
