"""canonical_json's fast path must spell every value exactly as the reference spelling does:
hashes and signatures of records and bundles made by older devices and hubs depend on it."""

from __future__ import annotations

import json
import random

import pytest

from edge.audit.records import canonical_json
from edge.errors import AuditError


def _reference(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Characters where the two escaping modes differ or where a naive check would go wrong.
_TRICKY = ["\x00", "\x1f", "\x7f", "\x80", "é", "ß", "\u2028", "\u00a0", "😀", "\\", "\\u", "\\\\u0041", '"', "\n", "\t", "\b", "/", "u", "a"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_TRICKY) if rng.random() < 0.3 else chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(0, 12)))


def _value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randint(0, 6 if depth < 3 else 3)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return rng.randint(-(2**63), 2**63)
    if kind == 2:
        return rng.choice([None, True, False, 0.5, -1e-300, 1e300])
    if kind == 3:
        return rng.random()
    if kind in (4, 5):
        return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def test_same_spelling_as_the_reference_on_random_values() -> None:
    rng = random.Random(20261205)
    for _ in range(5000):
        value = _value(rng)
        assert canonical_json(value) == _reference(value), value


@pytest.mark.parametrize("text", ["plain", "", "é", "\x7f", "\x01", "a\\u0041", "\\", "line\nbreak", "😀", "\ud800"])
def test_each_tricky_character(text: str) -> None:
    value = {"k": text, text: [text]}
    assert canonical_json(value) == _reference(value)


def test_not_plain_json_is_refused() -> None:
    with pytest.raises(AuditError):
        canonical_json({"x": float("nan")})
    with pytest.raises(AuditError):
        canonical_json({"x": b"bytes"})
