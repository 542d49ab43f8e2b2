"""What leaves the decision step: one typed, frozen `DecisionEvent` per decided track.

A track is decided once (edge/video/decide.py) into a `DecisionEvent` that already carries
everything downstream needs: the person's gallery id and uid as well as the name, the door the
camera opens, the card number the door outputs send, the liveness evidence, the threshold and
the false-match target it was made at, and the kiosk's request id for an enrollable unknown
face. The daemon audits it, then hands the same object to every channel (door outputs, ZeroMQ,
MQTT, journald, stdout); nothing downstream looks a person up again, by name or otherwise.

A track whose liveness is uncertain at its door is first asked for a challenge: a
`ChallengeEvent` (not audited; the decision that follows records it as `LivenessEvidence.step_up`).

`body` is the event's JSON form, built once per event however many channels serialise it;
`audit_body()` is the subset the audit journal keeps (uids, never names: the journal is not
encrypted).

Names stay in the gallery. Whatever leaves it — MQTT events, Home Assistant, ZeroMQ, journald,
the printed lines, the `--events` file, door events — is built from `person_fields()`, the one
place `[privacy] show_names` is applied: the person's uid always, the display name only when the
operator turned names on (the decider stamps that on each event as `show_names`). Erasure
destroys what the device holds; a name that was sent is out of its reach, so by default none is.
Only `person` itself carries the name, for the kiosk's `identify` answer (edge/outputs/kiosk.py),
which is asked "who is this?" on the authenticated control socket.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotation only: the shared vocabulary imports no numpy
    import numpy as np

DECISIONS = ("grant", "deny", "unknown", "spoof")

# What the audit journal keeps of a decision besides the person's uid and the capture time.
_AUDIT_FIELDS = (
    "event_id", "camera", "track_id", "decision", "reason", "score", "threshold", "target_fmr", "stranger_accept_rate", "gallery_size", "door",
    "frames_used", "latency_ms", "models", "liveness", "credential",
)


def person_fields(name: str | None, uid: str | None, show_names: bool) -> dict[str, str | None]:
    """The person's part of anything serialised about a decision or a door event: `person_uid`
    always, `person` (the display name) only with `[privacy] show_names` — absent, not null, so a
    consumer written for names fails loudly instead of reading a grant as nobody."""
    return {"person_uid": uid, "person": name} if show_names else {"person_uid": uid}


def person_label(fields: Mapping[str, Any]) -> str | None:
    """What a line, a log message or a sensor shows for the person of `fields` (a body made with
    `person_fields`): the name where it was let through, else the uid; None for nobody."""
    return fields.get("person") or fields.get("person_uid") or None


STEP_UP_OUTCOMES = ("passed", "timeout", "track_ended", "face_changed", "not_asked", "score_dropped")


@dataclass(frozen=True, slots=True)
class StepUpEvidence:
    """What a decision says of its step-up challenge (docs/liveness.md#step-up): asked, and how it ended."""

    kind: str  # what was asked: "both", "turn", "blink" or "any"
    # One of STEP_UP_OUTCOMES; "not_asked": uncertain, but the track ended before it was due;
    # "score_dropped": the cue was seen, but the track's liveness score fell below the band meanwhile.
    outcome: str
    asked_score: float  # the fused liveness score that fell in the door's uncertain band
    band: tuple[float, float]
    challenge_id: str | None = None  # the `challenge` event's id; None when not asked
    observed: str | None = None  # the cue(s) that passed it, in the order seen: "blink", "turn", "turn+blink"...
    waited_ms: float = 0.0  # source time from the challenge to its outcome
    frames: int = 0  # frames seen while it was pending

    def to_dict(self) -> dict[str, Any]:
        return {
            "challenge_id": self.challenge_id,
            "kind": self.kind,
            "outcome": self.outcome,
            "observed": self.observed,
            "asked_score": round(float(self.asked_score), 4),
            "band": [round(float(v), 4) for v in self.band],
            "waited_ms": round(float(self.waited_ms), 1),
            "frames": int(self.frames),
        }


@dataclass(frozen=True, slots=True)
class LivenessEvidence:
    """The liveness result a decision was made with (docs/liveness.md names the cues)."""

    score: float  # fused, 0..1, higher = more likely live
    live: bool
    threshold: float
    cues: dict[str, float]
    frames: int  # frames that contributed
    challenge: str | None = None  # "passed" / "failed" / None (no challenge configured)
    step_up: StepUpEvidence | None = None  # the door's step-up challenge, when the score was uncertain

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(float(self.score), 4),
            "live": bool(self.live),
            "threshold": round(float(self.threshold), 4),
            "cues": {k: round(float(v), 4) for k, v in self.cues.items()},
            "frames": int(self.frames),
            "challenge": self.challenge,
            "step_up": None if self.step_up is None else self.step_up.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ChallengeEvent:
    """A track whose liveness is uncertain at its door is asked for a challenge before it is
    decided. Nobody is named: the identity is decided after the challenge, in the decision that
    follows (same camera and track id; its `liveness.step_up.challenge_id` is this `challenge_id`)."""

    ts: float  # wall-clock time it was asked, unix seconds
    camera: str
    track_id: int
    door: str | None
    challenge: str  # "both" (a head turn and a blink), "turn", "blink" or "any" (either)
    timeout_ms: float
    deadline: float  # wall clock by when the cue must be seen (ts + timeout)
    source_deadline: float  # the same on the source clock (what the decider counts in)
    score: float  # the fused liveness score that fell in the band
    band: tuple[float, float]
    # `both`: the order and turn direction drawn for this track (edge/video/challenge.py), e.g.
    # ("turn_left", "blink"); the other challenges take their cue in any order: ().
    steps: tuple[str, ...] = ()
    challenge_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def body(self) -> dict[str, Any]:
        return {
            "challenge_id": self.challenge_id,
            "ts": round(self.ts, 3),
            "camera": self.camera,
            "track_id": self.track_id,
            "door": self.door,
            "challenge": self.challenge,
            "steps": list(self.steps),
            "timeout_ms": round(self.timeout_ms, 1),
            "deadline": round(self.deadline, 3),
            "source_deadline": round(self.source_deadline, 3),
            "liveness_score": round(self.score, 4),
            "band": [round(v, 4) for v in self.band],
        }


@dataclass(frozen=True)
class DecisionEvent:
    """One decided track. Frozen; `body` is cached on first use (not slotted for that reason)."""

    ts: float  # wall-clock time of the decision, unix seconds
    camera: str
    track_id: int
    decision: str  # one of DECISIONS
    reason: str  # why: "match", "no_match", "vote", "low_quality", "not_in_groups", ...
    person: str | None  # display name of the matched person (also for deny; None for unknown); never serialised as is
    person_id: int | None  # gallery row id; also the card number door outputs send
    person_uid: str | None  # the person's random uid (what audit, hub and erasure speak)
    score: float | None  # fused cosine score against `person` (or the best candidate)
    threshold: float  # the cosine threshold the match was decided at
    target_fmr: float | None  # per-comparison false-match rate it came from; None: [match] threshold set
    door: str | None  # the [[door]] this camera opens, if any
    frames_used: int
    quality: float  # mean quality score of the frames used
    latency_ms: float  # from the capture of the track's first frame to this decision
    # From the track's first frame that passed the quality gate (None: none did).
    usable_latency_ms: float | None
    first_seen: float  # wall-clock capture time of the track's first frame
    source_t: float  # the track's first frame on the source clock (position in a file)
    box: tuple[float, float, float, float]
    models: dict[str, str] = field(default_factory=dict)
    liveness: LivenessEvidence | None = None
    # From the track's first frame in which FaceMesh confirmed a face (None: it never did).
    face_latency_ms: float | None = None
    # A kiosk may turn this unknown face into an enrollment (edge/gallery/enrollment.py).
    request_id: str | None = None
    # The gallery the threshold was derived for: persons and templates of the active model, and
    # the `[match] stranger_accept_rate` it was set at (None: a fixed [match] threshold).
    gallery_size: int = 0
    gallery_templates: int = 0
    stranger_accept_rate: float | None = None
    # "card" / "pin" when a credential chose the person (never its value: a card number is a
    # credential); None for a face alone. A decision on a credential without a face has track_id -1.
    credential: str | None = None
    # Random, unique per decision: what `facegate gallery reject-match` and the audit speak of.
    event_id: str = field(default_factory=lambda: secrets.token_hex(8))
    # The fused probe embedding of a grant / deny, for the daemon to keep (sealed) so that
    # `gallery reject-match` can make it a negative template. Never serialised: not in `body`.
    probe: np.ndarray | None = field(default=None, repr=False, compare=False)
    # `[privacy] show_names` when the event was made: whether `body` and `label` carry the name.
    show_names: bool = False

    @property
    def card(self) -> int | None:
        """The credential number a door's Wiegand / OSDP output sends for this person."""
        return self.person_id if self.decision == "grant" else None

    def person_out(self) -> dict[str, str | None]:
        """This event's person as every channel may send it (see `person_fields`)."""
        return person_fields(self.person, self.person_uid, self.show_names)

    @property
    def label(self) -> str | None:
        """The person as a printed line or a log message names them: name or uid, None for nobody."""
        return person_label(self.person_out())

    @cached_property
    def body(self) -> dict[str, Any]:
        """The JSON form every channel sends. Shared: copy before adding fields."""
        return {
            "event_id": self.event_id,
            "ts": round(self.ts, 3),
            "camera": self.camera,
            "track_id": self.track_id,
            "decision": self.decision,
            "reason": self.reason,
            **self.person_out(),
            "score": None if self.score is None else round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "target_fmr": self.target_fmr,
            "stranger_accept_rate": self.stranger_accept_rate,
            "gallery_size": self.gallery_size,
            "gallery_templates": self.gallery_templates,
            "door": self.door,
            "frames_used": self.frames_used,
            "quality": round(self.quality, 3),
            "latency_ms": round(self.latency_ms, 1),
            "usable_latency_ms": None if self.usable_latency_ms is None else round(self.usable_latency_ms, 1),
            "face_latency_ms": None if self.face_latency_ms is None else round(self.face_latency_ms, 1),
            "first_seen": round(self.first_seen, 3),
            "source_t": round(self.source_t, 3),
            "box": [round(v, 1) for v in self.box],
            "models": self.models,
            "liveness": None if self.liveness is None else self.liveness.to_dict(),
            "request_id": self.request_id,
            "credential": self.credential,
        }

    def to_dict(self) -> dict[str, Any]:
        """A copy of `body` the caller may change."""
        return dict(self.body)

    def audit_body(self) -> dict[str, Any]:
        """The `decision` audit record: uids, never names."""
        body = {k: self.body[k] for k in _AUDIT_FIELDS}
        body["person_uid"] = self.person_uid
        body["captured_at"] = self.body["first_seen"]
        return body
