"""Wiegand 26/34-bit output: the frame a door controller expects from a card reader.

26-bit (HID H10301): even parity over bits 2-13, 8-bit facility code, 16-bit card number,
odd parity over bits 14-25. 34-bit (H10306 layout): even parity over bits 2-17, 16-bit
facility, 16-bit card, odd parity over bits 18-33. Bits go out most significant first: a 0 is
a pulse on D0, a 1 a pulse on D1 (both lines idle high; a pulse pulls one low).

The card number a face sends is the person's gallery id (stable for the life of the record),
so the controller's card database enrols people by that number (`facegate gallery list --json`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.errors import OutputError
from edge.outputs.gpio import Lines

PULSE_US = 50  # pulse width: readers use 20-100 us
INTERVAL_US = 2000  # from one pulse's start to the next: readers use 0.2-2 ms; 2 ms suits every panel
_FIELDS = {26: 8, 34: 16}  # facility-code bits per format; the card number is 16 bits in both


def _bits(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - i)) & 1 for i in range(width)]


def frame(card: int, facility: int, bits: int = 26) -> list[int]:
    """The frame's bits, parity included, first bit first."""
    if bits not in _FIELDS:
        raise OutputError(f"wiegand: {bits}-bit frames are not supported (26 or 34)")
    fc_bits = _FIELDS[bits]
    if not 0 <= facility < 2**fc_bits:
        raise OutputError(f"wiegand: facility code {facility} does not fit in {fc_bits} bits")
    if not 0 <= card < 2**16:
        raise OutputError(f"wiegand: card number {card} does not fit in 16 bits")
    payload = _bits(facility, fc_bits) + _bits(card, 16)
    half = len(payload) // 2
    even = sum(payload[:half]) % 2  # makes the first half plus this bit even
    odd = 1 - sum(payload[half:]) % 2  # makes the second half plus this bit odd
    return [even, *payload, odd]


def decode(bits: list[int]) -> tuple[int, int]:
    """(facility, card) of a frame whose parity checks; raises OutputError otherwise."""
    if len(bits) not in _FIELDS:
        raise OutputError(f"wiegand: a {len(bits)}-bit frame is neither 26 nor 34 bits")
    payload = bits[1:-1]
    half = len(payload) // 2
    if (bits[0] + sum(payload[:half])) % 2 != 0 or (bits[-1] + sum(payload[half:])) % 2 != 1:
        raise OutputError("wiegand: parity error")
    value = int("".join(map(str, payload)), 2)
    return value >> 16, value & 0xFFFF


def to_int(bits: list[int]) -> int:
    return int("".join(map(str, bits)), 2)


@dataclass(frozen=True, slots=True)
class WiegandOut:
    lines: Lines
    d0: int
    d1: int
    bits: int = 26
    facility: int = 0

    def send(self, card: int) -> list[int]:
        """Pulses the frame out and returns its bits. Blocks ~bits x 2 ms (52 ms for 26 bits)."""
        sent = frame(card, self.facility, self.bits)
        start = time.perf_counter_ns()
        for i, bit in enumerate(sent):
            line = self.d1 if bit else self.d0
            _until(start + i * INTERVAL_US * 1000)
            self.lines.set(line, True)
            _until(start + (i * INTERVAL_US + PULSE_US) * 1000)
            self.lines.set(line, False)
        return sent


def _until(deadline_ns: int) -> None:
    """Sleeps most of the way, then spins: a 50 us pulse is far below sleep()'s granularity."""
    left = deadline_ns - time.perf_counter_ns()
    if left > 1_000_000:
        time.sleep((left - 500_000) / 1e9)
    while time.perf_counter_ns() < deadline_ns:
        pass
