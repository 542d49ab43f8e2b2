"""PINs as person attributes: only a salted scrypt hash is kept, inside the sealed profile.

A PIN has few digits (4-12), so any hash of it falls to a search of 10^4..10^12 guesses; what
protects it is that the hash is sealed with the rest of the profile (AES-GCM under the person's
key), that scrypt makes each guess cost memory and time, and the keypad's lockout at the door
(`[[door]] pin_max_attempts`, `pin_lockout_s`). The salt is per person, so two people with the
same PIN have different hashes and a guess tests one person at a time.

The cost is paid at the door too: a typed PIN is hashed once per person who has a PIN (the salt
differs), so `pin_and_face` suits a few hundred PIN holders per gallery (see docs/door.md for
the figure); larger sites use cards, which are found through an in-memory map.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from edge.errors import GalleryError

# 2^13 x 8 x 128 bytes = 8 MiB per hash; ~25 ms on one x86 core, ~80 ms on a Raspberry Pi 4.
_N, _R, _P, _SALT, _LEN = 2**13, 8, 1, 16, 32


def check_pin_text(pin: str) -> str:
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        raise GalleryError("PIN: must be 4 to 12 digits")
    return pin


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * n * r * p + 2**20, dklen=_LEN)


def hash_pin(pin: str) -> str:
    """`scrypt$n$r$p$salt$hash` (hex) of a checked PIN, with a fresh random salt."""
    salt = os.urandom(_SALT)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${_scrypt(check_pin_text(pin), salt, _N, _R, _P).hex()}"


def pin_matches(pin: str, stored: str) -> bool:
    """Whether `pin` is the PIN `stored` was made from (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        return hmac.compare_digest(_scrypt(pin, bytes.fromhex(salt), int(n), int(r), int(p)), bytes.fromhex(digest))
    except ValueError:  # a malformed hash (or parameters scrypt refuses) matches nothing
        return False
