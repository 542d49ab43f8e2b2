"""One decision per track: collect the best frames, fuse, match, vote, check access, decide.

A single frame is a poor witness (blur, a half-turned head), so each track gathers embeddings
from its frames and decides once it has `[decide] min_frames` frames that pass the quality
gate — or after `max_wait_ms` with what it has, or when it is lost. The quality-weighted mean
of the best frames is matched against the gallery at the calibrated threshold; the frames also
vote one by one, and a grant needs both. Then the person's access is checked (validity window,
consent, the camera's groups) and liveness, when enabled, can turn any outcome into `spoof`.

Decisions: `grant` (known and allowed here), `deny` (known but not allowed), `unknown` (nobody
in the gallery, or not enough evidence), `spoof` (a presentation attack).

A due track whose liveness score falls in its door's uncertain band is not decided yet:
`step_up` asks it for a challenge (edge/video/challenge.py), and it is due again once the
challenge passed, failed or ran out of time.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.access.credentials import DoorCredentials
from edge.access.rules import CameraRules
from edge.access.rules import Candidate as AccessCandidate
from edge.config import CameraConfig, DecideConfig
from edge.events import ChallengeEvent, DecisionEvent, LivenessEvidence, StepUpEvidence
from edge.gallery.records import PersonRecord
from edge.gallery.search import Candidate, Gallery, Match
from edge.perception.faces import Face
from edge.video.challenge import Challenge, StepUpPolicy, ask, spoof_reason
from edge.video.credential_gate import CredentialGate
from edge.video.track import Track

# (camera, track id, the samples of an unknown face) -> a kiosk request id, or None: the
# enrollment service's `hold` (edge/gallery/enrollment.py) when a kiosk control socket is on.
HoldUnknown = Callable[[str, int, list["Sample"]], str | None]


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
        self.challenge: Challenge | None = None  # the step-up challenge asked of this track

    @property
    def has_face(self) -> bool:
        """FaceMesh confirmed a face in some frame (else it is nothing to recognise or call a spoof)."""
        return self.first_face_mono is not None or self.first_ok_mono is not None

    @property
    def n_ok(self) -> int:
        return sum(s.ok for s in self.samples)

    def add(self, face: Face, image: np.ndarray, t: float, mono: float, keep: int) -> None:
        if self.liveness is not None:
            self.liveness.add(image, face, t)
        if self.challenge is not None:
            self.challenge.observe(face, t)
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


class Decider:
    """Per camera: evidence per track id, and the decision when a track is due.

    The access rules are the decider's own (`rules`: the camera's groups, and the door's
    schedule, anti-passback, two-person rule... when a [[door]] uses this camera), so a
    decision that leaves here is final: outputs only act on it.
    """

    def __init__(
        self,
        cfg: DecideConfig,
        camera: CameraConfig,
        gallery: Gallery,
        models: dict[str, str],
        liveness: Any | None = None,
        rules: CameraRules | None = None,
        target_fmr: float | None = None,
        hold_unknown: HoldUnknown | None = None,
        credentials: DoorCredentials | None = None,
        show_names: bool = False,
    ) -> None:
        self.cfg = cfg
        # [privacy] show_names, stamped on every event (edge/events.py applies it); the pipeline
        # sets it again on a reload.
        self.show_names = show_names
        self.camera = camera
        self.gallery = gallery
        self.models = models
        self.liveness = liveness  # edge.perception.liveness.checker.Liveness, or None
        self.rules = rules or CameraRules(camera.groups)
        self.target_fmr = target_fmr
        self.hold_unknown = hold_unknown
        self.evidence: dict[int, Evidence] = {}
        self.decided: set[int] = set()
        self._persons: dict[int, PersonRecord | None] = {}
        # At a card / PIN door (edge/video/credential_gate.py); None at a face-only one.
        self.gate = CredentialGate(self, credentials) if credentials is not None else None
        self.step_up_policy = self._policy()

    def _policy(self) -> StepUpPolicy:
        door = self.rules.door.door if self.rules.door is not None else None
        threshold = float(getattr(self.liveness, "threshold", 0.5))
        yaw = float(getattr(getattr(self.liveness, "cfg", None), "challenge_yaw_deg", 20.0))
        return StepUpPolicy.for_door(door, threshold, yaw)

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
        if ev.challenge is not None:
            return ev.challenge.due(t)
        if self.gate is not None and not self.gate.ready(time.monotonic()):
            return False  # an AND door: the face waits for its card or PIN (or decides when it leaves)
        if ev.first_ok_t is None:
            # Nothing the quality gate accepts yet (far away, turned, dark): keep watching
            # rather than decide "unknown" for someone who is still walking up to the door —
            # unless the deployment asked for an answer by a deadline after the face appeared.
            deadline = self.cfg.max_face_wait_ms
            return deadline > 0 and ev.first_face_t is not None and (t - ev.first_face_t) * 1000.0 >= deadline - _CLOCK_SLACK_MS
        waited = (t - ev.first_ok_t) * 1000.0 >= self.cfg.max_wait_ms - _CLOCK_SLACK_MS
        return ev.n_ok >= self.cfg.min_frames or waited

    def step_up(self, track: Track, t: float) -> ChallengeEvent | None:
        """A due track whose liveness is uncertain at this door: the challenge asked of it (it
        stays undecided until that settles, see `due`); None: decide it now. Asked once per track."""
        ev = self.evidence.get(track.track_id)
        policy = self.step_up_policy
        if ev is None or ev.liveness is None or ev.challenge is not None or track.track_id in self.decided:
            return None
        if not ev.has_face:
            return None  # no face to ask (decided `no_face`)
        live = ev.liveness.result()
        # With the [liveness] turn_head challenge not yet passed the track is not live, whatever its score.
        if not policy.uncertain(live.score) or live.challenge == "failed":
            return None
        door = self.rules.door.door.name if self.rules.door is not None else None
        event = ask(policy, self.camera.name, track.track_id, door, float(live.score), t)
        samples = ev.used()
        reference = fuse(samples) if samples else None
        ev.challenge = Challenge(event, policy, t, reference, float(self.gallery.verify_threshold))
        return event

    def _liveness(self, ev: Evidence) -> tuple[Any | None, StepUpEvidence | None]:
        """The track's liveness result as the decision takes it, and its step-up record."""
        if ev.liveness is None:
            return None, None
        live = ev.liveness.result()
        if ev.challenge is not None:
            step_up = ev.challenge.evidence(float(live.score))
        elif self.step_up_policy.uncertain(live.score) and live.challenge != "failed" and ev.has_face:
            # Uncertain, but the track ended before it was due: nobody could be asked.
            policy = self.step_up_policy
            step_up = StepUpEvidence(policy.challenge, "not_asked", float(live.score), policy.band)
        else:
            return live, None
        # The score decided nothing here: the challenge did (its score stays in the record).
        return dataclasses.replace(live, live=step_up.outcome == "passed"), step_up

    def decide(self, track: Track) -> DecisionEvent:
        """The track's decision, made once."""
        self.decided.add(track.track_id)
        ev = self.evidence.pop(track.track_id, None) or Evidence(None)
        samples = ev.used()
        live, step_up = self._liveness(ev)
        outcome, person, score, reason = "unknown", None, None, "no_usable_frame"
        probe = fuse(samples) if samples else None
        credential = None
        if probe is not None and self.gate is not None and self.gate.verifies:
            outcome, reason, person, score, credential = self.gate.face(probe, samples, live)
        elif probe is not None:
            match = self.gallery.identify(probe, k=5)
            score = (match.named or match.candidates[0]).score if match.candidates else None
            reason = self._why(match, samples)
            # A spoof is refused before the rules run: it must not count as an entry (anti-passback).
            if reason == "match" and (live is None or live.live) and match.named is not None:
                outcome, reason, person = self._access(match.named, live)
        if not ev.has_face:
            # FaceMesh never saw a face in this track (the back of a head, a poster's outline):
            # nothing to recognise and nothing to call a spoof.
            outcome, person, reason = "unknown", None, "no_face"
        elif live is not None and not live.live:
            outcome, person, reason = "spoof", None, spoof_reason(step_up)
        request_id = None
        if outcome == "unknown" and reason == "no_match" and self.hold_unknown is not None and any(s.ok for s in samples):
            request_id = self.hold_unknown(self.camera.name, track.track_id, samples)
        return self._event(track, ev, samples, outcome, reason, person, score, live, request_id, probe, credential, step_up)

    def credential_events(self, now: float) -> list[DecisionEvent]:
        """Decisions on cards and PINs without a face (unknown card, a card alone at a
        card_or_face door, a card whose window ran out...); the pipeline asks every loop."""
        return self.gate.poll(now) if self.gate is not None else []

    def credential_event(self, track: Track, outcome: str, reason: str, person: PersonRecord | None, kind: str) -> DecisionEvent:
        return self._event(track, Evidence(None), [], outcome, reason, person, None, None, None, None, kind)

    def _event(
        self, track: Track, ev: Evidence, samples: list[Sample], outcome: str, reason: str,
        person: PersonRecord | None, score: float | None, live: Any | None, request_id: str | None,
        probe: np.ndarray | None = None, credential: str | None = None, step_up: StepUpEvidence | None = None,
    ) -> DecisionEvent:
        now_mono = time.monotonic()
        door = self.rules.door.door.name if self.rules.door is not None else None
        return DecisionEvent(
            ts=time.time(),
            camera=self.camera.name,
            track_id=track.track_id,
            decision=outcome,
            reason=reason,
            person=person.profile.name if person else None,
            person_id=person.id if person else None,
            person_uid=person.uid if person else None,
            score=score,
            # A credential's face was verified 1:1: at the per-comparison threshold and rate.
            threshold=self.gallery.verify_threshold if credential else self.gallery.threshold,
            target_fmr=self.target_fmr if credential else self.gallery.threshold_fmr,
            stranger_accept_rate=self.gallery.policy.stranger_accept_rate if self.gallery.threshold_fmr is not None else None,
            gallery_size=self.gallery.persons,
            gallery_templates=self.gallery.templates,
            door=door,
            frames_used=len(samples),
            quality=float(np.mean([s.quality for s in samples])) if samples else 0.0,
            latency_ms=(now_mono - track.first_mono) * 1000.0,
            usable_latency_ms=None if ev.first_ok_mono is None else (now_mono - ev.first_ok_mono) * 1000.0,
            first_seen=track.first_ts,
            source_t=track.first_t,
            box=track.box,
            models=self.models,
            liveness=_evidence(live, step_up),
            face_latency_ms=None if ev.first_face_mono is None else (now_mono - ev.first_face_mono) * 1000.0,
            request_id=request_id,
            # Kept (sealed, for a while) when it named someone, so a wrong match can be rejected.
            probe=probe if person is not None else None,
            credential=credential,
            show_names=self.show_names,
        )

    def forget(self, track: Track) -> None:
        """The track ended; its id will not come back."""
        self.evidence.pop(track.track_id, None)
        self.decided.discard(track.track_id)

    def reload(self, gallery: Gallery, rules: CameraRules, target_fmr: float | None, credentials: DoorCredentials | None = None) -> None:
        self.gallery = gallery
        self.rules = rules
        self.target_fmr = target_fmr
        self._persons.clear()
        self.gate = CredentialGate(self, credentials) if credentials is not None else None
        self.step_up_policy = self._policy()  # the new door's; a pending challenge keeps its own deadline

    def _why(self, match: Match, samples: list[Sample]) -> str:
        if match.person is None:
            # Above the threshold but within the margin of that person's negative templates
            # ("not this person", edge/gallery/negatives.py): a known look-alike.
            return "rejected_lookalike" if match.rejected else "no_match"
        if not any(s.ok for s in samples):
            # Never open a door on frames the quality gate rejected.
            return "low_quality"
        votes = Counter(self.gallery.identify(s.embedding, k=1).person for s in samples)
        if votes[match.person] / len(samples) < self.cfg.min_vote:
            return "vote"
        return "match"

    def person_record(self, person_id: int) -> PersonRecord | None:
        """The person's record, cached until a reload; None when they were removed."""
        if person_id not in self._persons:
            self._persons[person_id] = self.gallery.person(person_id)
        return self._persons[person_id]

    def _access(self, candidate: Candidate, live: Any | None) -> tuple[str, str, PersonRecord | None]:
        """(outcome, reason, the person) for a matched, live candidate."""
        person_id = candidate.person_id
        record = self.person_record(person_id)
        if record is None:
            return "unknown", "removed", None
        live_ok = None if live is None else bool(live.live)
        asked = AccessCandidate(person_id, record.profile.name, record.profile, candidate.score, live_ok, getattr(live, "challenge", None))
        refused = self.rules.check(asked, time.time())
        return ("deny", refused, record) if refused else ("grant", "match", record)


def _evidence(live: Any | None, step_up: StepUpEvidence | None = None) -> LivenessEvidence | None:
    if live is None:
        return None
    # The cues and the challenge states go along so an audit can tell why a track was refused.
    return LivenessEvidence(
        float(live.score), bool(live.live), float(live.threshold), {k: float(v) for k, v in live.cues.items()},
        int(live.frames), live.challenge, step_up,
    )
