"""The card / PIN half of a door's decisions (`[[door]] mode`, docs/door.md).

One gate per decider whose camera opens a credential door. On the inference thread it takes what
the door's readers delivered (edge/access/credentials.py) and turns it into decisions:

- `card_and_face` / `pin_and_face`: a known card (a right PIN) is held for `credential_window_s`;
  a face track is only decided while one is held (or when it ends: `card_required` /
  `pin_required`), and then verified 1:1 against the card holder's templates at the 1:1 threshold
  (`Gallery.verify_threshold`) — `face_mismatch` when it is someone else. The rules run after, and
  a grant consumes the credential. A card with no face in the window: `no_face_for_card`.
- `card_or_face`: a known card alone goes through the rules (no score, no liveness); a face alone
  is decided as at a face-only door.
- anywhere: an unknown card is `unknown_card`; a wrong PIN `wrong_pin`, and `pin_max_attempts` of
  them lock the keypad for `pin_lockout_s` (`pin_locked_out`).

Decisions without a face have track id -1, no frames and no score; every one names the kind of
credential and the person's uid, never the card number or the PIN.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.access.credentials import CARD, PIN, DoorCredentials, Presented
from edge.access.rules import Candidate
from edge.events import DecisionEvent
from edge.gallery.records import PersonRecord
from edge.video.track import Track

if TYPE_CHECKING:
    from edge.video.decide import Decider, Sample

_LOG = logging.getLogger(__name__)
# (outcome, reason, person, score, credential kind)
Outcome = tuple[str, str, PersonRecord | None, float | None, str | None]


class CredentialGate:
    def __init__(self, decider: Decider, creds: DoorCredentials) -> None:
        self.decider = decider
        self.creds = creds
        decider.gallery.credentials()  # the card map, built now rather than on the first card

    @property
    def kind(self) -> str:
        return PIN if self.creds.door.mode == "pin_and_face" else CARD

    @property
    def verifies(self) -> bool:
        """Faces here are verified 1:1 against a credential's person (the two AND modes)."""
        return self.creds.door.mode in ("card_and_face", "pin_and_face")

    def ready(self, now: float) -> bool:
        """Whether a face track may be decided now: at an AND door only with a credential held."""
        return not self.verifies or self.creds.current(now) is not None

    # -- a face ------------------------------------------------------------------------------

    def face(self, probe: np.ndarray, samples: list[Sample], live: Any | None) -> Outcome:
        """The decision for a face at an AND door (a spoof or faceless track is overruled after)."""
        gallery, now = self.decider.gallery, time.monotonic()
        pending = self.creds.current(now)
        if pending is None:
            # A face alone is never let in here; it is named (1:N) for the record only.
            named = gallery.identify(probe, k=1).named
            record = self.decider.person_record(named.person_id) if named is not None else None
            return "deny", f"{self.kind}_required", record, named.score if named else None, None
        if not any(s.ok for s in samples):
            return "unknown", "low_quality", None, None, pending.kind
        if live is not None and not live.live:
            return "spoof", "liveness", None, None, pending.kind  # the credential stays for the real face
        self.creds.tried()
        matches = [(pid, gallery.verify_id(pid, probe)) for pid in pending.person_ids]
        pid, match = max(matches, key=lambda m: m[1].score if np.isfinite(m[1].score) else -2.0)
        record = self.decider.person_record(pid)
        score = match.score if np.isfinite(match.score) else None
        if record is None:
            return "unknown", "removed", None, score, pending.kind
        if match.person is None:
            return "deny", "face_mismatch", record, score, pending.kind
        asked = Candidate(pid, record.profile.name, record.profile, match.score, None if live is None else bool(live.live),
                          getattr(live, "challenge", None), credential=pending.kind)
        refused = self.decider.rules.check(asked, time.time())
        if refused is not None:
            return "deny", refused, record, score, pending.kind
        self.creds.consume()
        return "grant", "match", record, score, pending.kind

    # -- credentials without a face -------------------------------------------------------------

    def poll(self, now: float) -> list[DecisionEvent]:
        """Decisions on what the readers delivered since the last call, and on an expired card."""
        events = [e for p in self.creds.take_new(now) if (e := self._presented(p, now)) is not None]
        gone = self.creds.expired(now)
        if gone is not None and not gone.tried and self.verifies:
            events.append(self._event("deny", f"no_face_for_{gone.kind}", self.decider.person_record(gone.person_ids[0]), gone.kind))
        return events

    def _presented(self, p: Presented, now: float) -> DecisionEvent | None:
        if p.kind != (PIN if self.kind == PIN else CARD):
            _LOG.info("door %s: a %s was presented where the mode is %s; ignored", self.creds.door.name, p.kind, self.creds.door.mode)
            return None
        if p.kind == PIN:
            return self._pin(str(p.value), now)
        person_id = self.decider.gallery.credentials().person_by_card(int(p.value))
        record = self.decider.person_record(person_id) if person_id is not None else None
        if record is None:
            return self._event("deny", "unknown_card", None, CARD)
        if self.verifies:
            self.creds.hold(CARD, (record.id,), now)
            return None
        asked = Candidate(record.id, record.profile.name, record.profile, 0.0, None, credential=CARD, face=False)
        refused = self.decider.rules.check(asked, time.time())
        return self._event("deny" if refused else "grant", refused or "card", record, CARD)

    def _pin(self, pin: str, now: float) -> DecisionEvent | None:
        if self.creds.locked_out(now):
            return self._event("deny", "pin_locked_out", None, PIN)
        person_ids = self.decider.gallery.credentials().persons_by_pin(pin) if pin else ()
        if not person_ids:
            if self.creds.wrong_pin(now):
                _LOG.warning("door %s: keypad locked for %.0f s after %d wrong PINs", self.creds.door.name,
                             self.creds.door.pin_lockout_s, self.creds.door.pin_max_attempts)
            return self._event("deny", "wrong_pin", None, PIN)
        self.creds.right_pin()
        self.creds.hold(PIN, person_ids, now)
        return None

    def _event(self, outcome: str, reason: str, person: PersonRecord | None, kind: str) -> DecisionEvent:
        mono, wall = time.monotonic(), time.time()
        track = Track(-1, (0.0, 0.0, 0.0, 0.0), 0.0, mono, wall, 0.0, confirmed=True)
        return self.decider.credential_event(track, outcome, reason, person, kind)
