"""Wiegand frames against published reference encodings, and the pulses on the D0/D1 lines."""

from __future__ import annotations

import itertools

import pytest

from bench.harness.fake_gpio import FakeChip
from edge.errors import OutputError
from edge.outputs.wiegand import WiegandOut, decode, frame, to_int

# (facility, card, frame) from other implementations' documentation and tests:
# jessety/wiegand-encoder README, Z9 TestBinaryFormatter, angorb wiegand-26bit-calculator README.
REFERENCE_26 = [
    (90, 324, "00101101000000001010001000"),
    (68, 41551, "00100010010100010010011111"),
    (99, 999, "00110001100000011111001111"),
]


def bits(text: str) -> list[int]:
    return [int(c) for c in text]


@pytest.mark.parametrize(("facility", "card", "expected"), REFERENCE_26)
def test_26_bit_frames_match_reference_encodings(facility: int, card: int, expected: str) -> None:
    assert frame(card, facility, 26) == bits(expected)
    assert decode(bits(expected)) == (facility, card)


def test_26_bit_hex_of_a_reference_card() -> None:
    assert f"{to_int(frame(999, 99)):07X}" == "0C607CF"  # the calculator's hex for FC 99 / card 999


def test_34_bit_parity_covers_each_half_of_the_payload() -> None:
    # FC 1, card 1: one 1 in bits 2-17 -> even parity 1; one 1 in bits 18-33 -> odd parity 0.
    assert to_int(frame(1, 1, 34)) == 0x200020002
    f = frame(0xBEEF, 0x1234, 34)
    assert len(f) == 34 and sum(f[:17]) % 2 == 0 and sum(f[17:]) % 2 == 1
    assert decode(f) == (0x1234, 0xBEEF)


def test_a_flipped_bit_fails_parity_and_out_of_range_values_are_refused() -> None:
    f = frame(41551, 68)
    f[5] ^= 1
    with pytest.raises(OutputError, match="parity"):
        decode(f)
    with pytest.raises(OutputError, match="facility"):
        frame(1, 256, 26)
    with pytest.raises(OutputError, match="card"):
        frame(70000, 1, 26)


def test_pulses_on_d0_and_d1_spell_the_frame() -> None:
    chip = FakeChip()
    lines = chip("/dev/gpiochip0", {4: True, 5: True}, {})
    sent = WiegandOut(lines, d0=4, d1=5, bits=26, facility=68).send(41551)
    assert sent == bits("00100010010100010010011111")
    # Each bit is one pulse: the line goes active (pulled low), then back, on D1 for 1, D0 for 0.
    pulses = [line for _, line, active in lines.log if active]
    releases = [line for _, line, active in lines.log if not active]
    assert pulses == releases == [5 if b else 4 for b in sent]
    starts = [t for t, _, active in lines.log if active]
    assert all(b > a for a, b in itertools.pairwise(starts))  # one pulse at a time, in order
