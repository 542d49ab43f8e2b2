"""The group key ratchet: the key of a scope's next epoch, derived one way from the current one.

An erasure must leave the hub without a key that opens captured bundles which carried the erased
person (`sync.hub.epochs`), but a fresh random key costs a wrap per device (~135 B each: 135 KB
per device-change at 1,000 devices). With no membership change, the next epoch's key is instead
HKDF-SHA256(key_n, info = domain | scope | n+1): every member derives it from the key it holds,
the hub keeps only the new one, and nobody can go back (HKDF is one-way). Ratchet epochs are
consecutive (n, n+1, …) from the fresh epoch that began the chain (`base`, named in every bundle
of a ratcheted epoch as `ratchet_base`, signed with the rest); a device derives at most
`MAX_STEPS` forward, else asks for a resync. A device removed from the group holds a key of an
older chain: a membership change starts a fresh random key, so its ratchet derives noise.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"facegate/v1/group-key-ratchet|"
MAX_STEPS = 10_000  # a device further behind than this asks for a resync (the hub starts a fresh key at this length)


def step(key: bytes, scope: str, epoch: int) -> bytes:
    """The key of `epoch` from the key of `epoch - 1`."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO + f"{scope}|{epoch}".encode()).derive(key)


def forward(key: bytes, scope: str, held: int, epoch: int) -> bytes:
    """The key of `epoch` from the key of epoch `held` (held < epoch ≤ held + MAX_STEPS)."""
    if not held < epoch <= held + MAX_STEPS:
        raise ValueError(f"ratchet from epoch {held} to {epoch}: out of range")
    for e in range(held + 1, epoch + 1):
        key = step(key, scope, e)
    return key
