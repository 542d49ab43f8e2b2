"""Step-up liveness: a track that is unsure at its door is asked for a challenge before it is decided.

The fused liveness score (edge/perception/liveness/checker.py) is one number per track. Far from
the threshold it decides on its own; close to it, a door that must not open for a replay asks
more: a track whose score falls in the door's uncertain band `[low, high)` (`[[door]]
liveness_uncertain_band`) is not decided when it is due. The decider asks for the door's
challenge — a head turn and a blink (`both`, the default), one of them (`turn`, `blink`), or
either (`any`) — announces it (`ChallengeEvent`: ZeroMQ, MQTT, the
annotate overlay), keeps watching the track, and decides it once the cue was seen after the
challenge started (liveness passed, then matching and the door's rules as usual), or `spoof`
when the deadline passes (`challenge_timeout`), the track ends first or another face takes the
track's place (`challenge_failed`). The decision's liveness evidence says what was asked and how
it ended (`StepUpEvidence`, audited with the decision).

The cues are the ones the liveness checker measures on every FaceMesh (edge/perception/liveness/cues.py),
counted on the frames after the challenge started only, so a blink or a turn before it proves
nothing about the face that is being asked. `both` is a sequence drawn per track: a turn to the
person's left or right and a blink, in a random order (`draw_steps`), each step counted only on the
frames after the one before it was done. A replay shows whatever its footage shows: one that turns
one way and then blinks passes one draw in four, not every one. A photo or a still screen shows neither cue and
times out. The same face: every frame after the start whose embedding the quality gate accepted
must match the track's fused embedding at the moment it was asked, at the 1:1 threshold, and at
least one must: a live accomplice who steps in front of a photo to do the turn fails the
challenge, and one who does it turned away from the camera does not pass it.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from dataclasses import dataclass

import numpy as np

from edge.config import DoorConfig
from edge.events import ChallengeEvent, StepUpEvidence
from edge.perception.faces import Face
from edge.perception.liveness import cues

# The default band runs from the threshold to the score whose odds are 19x the threshold's
# (0.5 -> 0.95). The fusion adds log-odds, and log(19) = 2.9 is more than a hand-made cue fooled
# into its full weight against the face (CUE_FLOOR, 1.7) and a blink a replay can show too (1.1)
# together: a track above the band stays live without either. The one attack measured above
# the threshold, a photo the CNN takes for live moved as a plane (0.93), falls inside.
DEFAULT_BAND_LOG_ODDS = math.log(19.0)


# The person's own left / right: cues.yaw_deg rises as the nose moves towards FaceMesh's left
# eye (263, the person's left), i.e. as the person turns to their left.
TURNS = ("turn_left", "turn_right")
_RANDOM = secrets.SystemRandom()  # the draw must not be predictable from earlier ones


def draw_steps(challenge: str, rng: random.Random = _RANDOM) -> tuple[str, ...]:
    """The ordered steps a `both` challenge asks of one track: a turn in a random direction and a
    blink, in a random order (4 sequences). The other challenges have no order: ()."""
    if challenge != "both":
        return ()
    steps = [rng.choice(TURNS), "blink"]
    rng.shuffle(steps)
    return tuple(steps)


def step_done(step: str, ears: list[float], yaws: list[float], yaw_deg: float) -> bool:
    """Whether the frames since `step` began show it: a blink with the head steady, or the yaw
    `yaw_deg` past its level at the step's first frame, in the asked direction."""
    if step == "blink":
        return cues.blinked(ears, yaws)
    if not yaws:
        return False
    moved = yaws[-1] - yaws[0]
    return moved >= yaw_deg if step == "turn_left" else -moved >= yaw_deg


def default_band(threshold: float) -> tuple[float, float]:
    t = min(max(threshold, 1e-6), 1.0 - 1e-6)
    # Rounded: 0.95, not 0.9500000000000001, in events and records.
    return threshold, round(1.0 / (1.0 + (1.0 - t) / t / math.exp(DEFAULT_BAND_LOG_ODDS)), 6)


@dataclass(frozen=True, slots=True)
class StepUpPolicy:
    """A door's liveness step-up: scores in [low, high) ask for `challenge` within `timeout_ms`."""

    low: float
    high: float
    challenge: str  # "both", "turn", "blink" or "any"
    timeout_ms: float
    yaw_deg: float  # the turn a "turn" needs ([liveness] challenge_yaw_deg)

    @classmethod
    def for_door(cls, door: DoorConfig | None, threshold: float, yaw_deg: float) -> StepUpPolicy:
        """The door's policy; a camera without a door has none (nothing opens there, and a
        kiosk's customers are not asked to blink): it decides at the threshold as before."""
        if door is None:
            return cls(0.0, 0.0, "turn", 0.0, yaw_deg)
        low, high = door.liveness_uncertain_band or default_band(threshold)
        return cls(low, high, door.liveness_challenge, door.liveness_challenge_timeout_ms, yaw_deg)

    @property
    def band(self) -> tuple[float, float]:
        return self.low, self.high

    def uncertain(self, score: float) -> bool:
        return self.low <= score < self.high


class Challenge:
    """One track's pending challenge: fed every frame after it was asked, settled once."""

    def __init__(self, event: ChallengeEvent, policy: StepUpPolicy, start_t: float,
                 reference: np.ndarray | None, same_face: float) -> None:
        self.event = event
        self.policy = policy
        self.kinds = ("blink", "turn") if policy.challenge in ("any", "both") else (policy.challenge,)
        self.needs_all = policy.challenge == "both"
        self.seen: list[str] = []  # the cues seen so far, in order
        self.start_t, self.last_t = start_t, start_t
        self.deadline_t = event.source_deadline
        self.reference = reference  # the track's fused embedding when asked; None: it had none
        self.same_face = same_face  # cosine a frame must reach against it (the gallery's 1:1 threshold)
        self.ears: list[float] = []
        self.yaws: list[float] = []
        self.steps = event.steps  # `both`: the ordered steps; () = the cues in any order
        self.step_from = 0  # index into ears / yaws where the current step's frames begin
        self.frames = 0
        # A frame after the start that the gate passed and that matched: without one, nobody
        # showed that the face doing the cue is the one that was asked (a turned-away stranger).
        self.matched = reference is None
        self.observed: str | None = None  # the cue, once the face was shown to be the same
        self.face_changed = False
        self.timed_out = False

    @property
    def settled(self) -> bool:
        return self.observed is not None or self.face_changed or self.timed_out

    def observe(self, face: Face, t: float) -> None:
        points = face.mesh.points if face.mesh is not None else None
        ear = cues.eye_aspect_ratio(points) if points is not None else None
        yaw = cues.yaw_deg(points) if points is not None else None
        self.add(ear, yaw, face.embedding, face.quality.ok, t)

    def add(self, ear: float | None, yaw: float | None, embedding: np.ndarray | None, ok: bool, t: float) -> None:
        """One frame after the challenge started: its eye aspect ratio and yaw (None: no FaceMesh),
        its embedding and whether the quality gate passed it."""
        if self.settled:
            return  # decided by now: later frames change nothing
        if t >= self.deadline_t:
            self.timed_out, self.last_t = True, t  # a cue in a frame past the deadline is too late
            return
        self.frames, self.last_t = self.frames + 1, t
        if ok and embedding is not None and self.reference is not None:
            if float(embedding @ self.reference) < self.same_face:
                self.face_changed = True
                return
            self.matched = True
        if ear is not None and yaw is not None:  # both come from the same FaceMesh
            self.ears.append(ear)
            self.yaws.append(yaw)
        if self.steps:
            self._next_step()
            done = len(self.seen) == len(self.steps)
        else:
            if "blink" in self.kinds and "blink" not in self.seen and cues.blinked(self.ears, self.yaws):
                self.seen.append("blink")
            if "turn" in self.kinds and "turn" not in self.seen and cues.turned(self.yaws, self.policy.yaw_deg):
                self.seen.append("turn")
            done = bool(self.seen) and (not self.needs_all or len(self.seen) == len(self.kinds))
        if self.matched and done:
            self.observed = "+".join(self.seen)

    def _next_step(self) -> None:
        """The ordered sequence: the current step judged on its own frames; once done, the next
        one starts from the frame that finished it (a blink during the turn does not count)."""
        if len(self.seen) == len(self.steps):
            return
        step = self.steps[len(self.seen)]
        if step_done(step, self.ears[self.step_from :], self.yaws[self.step_from :], self.policy.yaw_deg):
            self.seen.append(step)
            self.step_from = max(len(self.ears) - 1, 0)

    def due(self, t: float) -> bool:
        """Whether the track can be decided at source time `t`: passed, failed or out of time."""
        if not self.settled and t >= self.deadline_t:
            self.timed_out, self.last_t = True, t
        return self.settled

    def evidence(self, score: float | None = None) -> StepUpEvidence:
        """How it ended; a challenge still pending when its track is decided ended with the track.

        `score`: the track's liveness score at the decision. The track is judged by its weakest
        window, and the frames watched during the challenge are windows too: a cue done by a face
        whose score meanwhile fell below the band (a replay seen clearly at last) is
        `score_dropped`, not `passed` — the challenge proves a movement, not a face."""
        if self.face_changed:
            outcome = "face_changed"
        elif self.observed is not None:
            outcome = "score_dropped" if score is not None and score < self.policy.low else "passed"
        else:
            outcome = "timeout" if self.timed_out else "track_ended"
        return StepUpEvidence(
            self.policy.challenge, outcome, self.event.score, self.policy.band, self.event.challenge_id, self.observed,
            (self.last_t - self.start_t) * 1000.0, self.frames,
        )


def ask(policy: StepUpPolicy, camera: str, track_id: int, door: str | None, score: float, t: float) -> ChallengeEvent:
    """The `challenge` event for a track asked at source time `t`."""
    now = time.time()
    timeout_s = policy.timeout_ms / 1000.0
    return ChallengeEvent(now, camera, track_id, door, policy.challenge, policy.timeout_ms, now + timeout_s, t + timeout_s,
                          score, policy.band, draw_steps(policy.challenge))


def spoof_reason(step_up: StepUpEvidence | None) -> str:
    """The `reason` of a `spoof` decision."""
    if step_up is None:
        return "liveness"
    return "challenge_timeout" if step_up.outcome == "timeout" else "challenge_failed"
