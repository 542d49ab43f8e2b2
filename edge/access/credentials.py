"""Cards and PINs presented at a door, on their way from a reader thread to the door's decider.

At a `card_and_face` / `pin_and_face` door the credential chooses the person and the face is then
verified 1:1 against that person's templates; at a `card_or_face` door a known card alone opens
(docs/door.md). The readers (edge/outputs/card_readers.py: Wiegand on GPIO inputs, an OSDP PD's
card reads and keypad) call `DoorCredentials.card` / `.keys` on their own threads; the door's
decider, on the inference thread, takes what arrived (`take_new`), resolves it against the gallery
and keeps at most one credential pending (`hold`) until a face uses it, a grant consumes it, or
`credential_window_s` passes.

A raw card number or PIN lives here only between the reader and the decider (memory only): what
leaves the decision step is the person's uid and the kind of credential, never its value.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from edge.config import DoorConfig

CARD, PIN = "card", "pin"
MODES = ("face", "card_and_face", "pin_and_face", "card_or_face")
PIN_MIN, PIN_MAX = 4, 12  # digits
PIN_KEY_TIMEOUT_S = 5.0  # digits typed without '#' for this long are taken as the PIN
_ENTER, _CLEAR = frozenset(b"#\r"), frozenset(b"*\x7f")  # OSDP keypads send 0x0D for '#', 0x7F for '*'
_INBOX_MAX = 16  # reads waiting for the decider; a reader flooding a door loses the oldest


def card_id(facility: int, number: int) -> int:
    """One integer per card, whatever its frame: facility code above the 16-bit card number
    (`facegate gallery enroll --card FC:NUMBER` stores the same value)."""
    return (facility << 16) | number


@dataclass(frozen=True, slots=True)
class Presented:
    """What a reader read: a card id, or the digits of a PIN. In memory only."""

    kind: str  # CARD or PIN
    value: int | str = 0
    at: float = 0.0  # monotonic seconds


@dataclass(frozen=True, slots=True)
class Pending:
    """A resolved credential waiting for its face."""

    kind: str
    person_ids: tuple[int, ...]  # a PIN shared by two people selects both; a card selects one
    at: float
    tried: bool = False  # a face was checked against it (no `no_face_for_card` at expiry then)


class Keypad:
    """Key presses → a PIN: digits, then '#' (or a pause of PIN_KEY_TIMEOUT_S); '*' starts over.
    Fewer than PIN_MIN digits at '#' is a wrong entry (an empty string); so is a run of more
    than PIN_MAX, whose further digits are then ignored until '#', '*' or a pause."""

    def __init__(self) -> None:
        self.digits = ""
        self.overflow = False
        self.last = 0.0

    def press(self, data: bytes, now: float) -> list[str]:
        entered = self.timeout(now)
        for key in data:
            if key in _ENTER or key in _CLEAR:
                if key in _ENTER and self.digits and not self.overflow:
                    entered.append(self.digits if len(self.digits) >= PIN_MIN else "")
                self.digits, self.overflow = "", False
            elif 0x30 <= key <= 0x39 and not self.overflow:
                self.digits += chr(key)
                if len(self.digits) > PIN_MAX:
                    entered.append("")
                    self.digits, self.overflow = "", True
        self.last = now
        return entered

    def timeout(self, now: float) -> list[str]:
        if now - self.last < PIN_KEY_TIMEOUT_S:
            return []
        self.overflow = False
        if not self.digits:
            return []
        pin, self.digits = self.digits, ""
        return [pin if len(pin) >= PIN_MIN else ""]


class DoorCredentials:
    """One door's inbox (reader threads → decider) and its pending credential (decider only)."""

    def __init__(self, door: DoorConfig) -> None:
        self.door = door
        self._inbox: deque[Presented] = deque(maxlen=_INBOX_MAX)
        self._lock = threading.Lock()
        self._keypad = Keypad()
        self.pending: Pending | None = None
        self._wrong: deque[float] = deque()  # times of wrong PINs within the lockout window
        self.locked_until = 0.0

    # -- reader threads --------------------------------------------------------------------

    def card(self, card: int, now: float) -> None:
        with self._lock:
            self._inbox.append(Presented(CARD, card, now))

    def keys(self, data: bytes, now: float) -> None:
        with self._lock:
            for pin in self._keypad.press(data, now):
                self._inbox.append(Presented(PIN, pin, now))

    # -- the decider (inference thread) ------------------------------------------------------

    def take_new(self, now: float) -> list[Presented]:
        with self._lock:
            for pin in self._keypad.timeout(now):
                self._inbox.append(Presented(PIN, pin, now))
            out = list(self._inbox)
            self._inbox.clear()
        return out

    def hold(self, kind: str, person_ids: tuple[int, ...], now: float) -> None:
        """The newest credential replaces an older one: one person at the reader at a time."""
        self.pending = Pending(kind, person_ids, now)

    def current(self, now: float) -> Pending | None:
        if self.pending is not None and now - self.pending.at > self.door.credential_window_s:
            return None
        return self.pending

    def tried(self) -> None:
        if self.pending is not None:
            self.pending = Pending(self.pending.kind, self.pending.person_ids, self.pending.at, True)

    def consume(self) -> None:
        self.pending = None

    def expired(self, now: float) -> Pending | None:
        """The pending credential whose window just ended (taken off), else None."""
        if self.pending is None or now - self.pending.at <= self.door.credential_window_s:
            return None
        gone, self.pending = self.pending, None
        return gone

    def locked_out(self, now: float) -> bool:
        return now < self.locked_until

    def wrong_pin(self, now: float) -> bool:
        """Counts a wrong PIN; True when it locks the keypad for pin_lockout_s."""
        self._wrong.append(now)
        while self._wrong and now - self._wrong[0] > self.door.pin_lockout_s:
            self._wrong.popleft()
        if len(self._wrong) >= self.door.pin_max_attempts:
            self._wrong.clear()
            self.locked_until = now + self.door.pin_lockout_s
            return True
        return False

    def right_pin(self) -> None:
        self._wrong.clear()


class Credentials:
    """Every credential door of a config, by door name (shared by the readers and the deciders)."""

    def __init__(self, doors: tuple[DoorConfig, ...]) -> None:
        self.doors = {d.name: DoorCredentials(d) for d in doors if d.mode != "face"}

    def get(self, door: str | None) -> DoorCredentials | None:
        return self.doors.get(door) if door is not None else None

    def reconfigure(self, doors: tuple[DoorConfig, ...]) -> None:
        """After a reload: doors keep their inbox and lockout, take their new settings."""
        fresh = Credentials(doors).doors
        for name, door in fresh.items():
            if name in self.doors:
                self.doors[name].door = door.door
                fresh[name] = self.doors[name]
        self.doors = fresh
