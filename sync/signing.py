"""Signed hub → device messages: one way to sign and check them, with key ids.

Every message the hub sends a device that the device acts on (bundles, acks, resend requests,
key rotations) carries `key_id` (which hub signing key) and `sig` (Ed25519 over a domain string,
a NUL and the canonical JSON of every other field). The domain differs per message type, so a
signature made for one kind of message never verifies as another. A device checks against the
hub keys it trusts (`[sync] hub_sign_key_file` and what rotations added, minus revoked ones): a
mapping key id → public key; an unknown or revoked id is refused like a bad signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.audit.records import canonical_json
from sync.protocol import SignatureError

KEY_ID_HEX = 16  # 64 bits of SHA-256 of the raw public key: names a key, not a secret


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def signed_bytes(domain: str, message: Mapping[str, Any]) -> bytes:
    """What is signed: the domain, a NUL, the canonical JSON of every field but `sig`."""
    return (domain + "\x00" + canonical_json({k: v for k, v in message.items() if k != "sig"})).encode()


def sign(message: dict[str, Any], domain: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """`message` with `key_id` and `sig` added (key_id is signed too)."""
    out = {**message, "key_id": key_id(key.public_key())}
    out.pop("sig", None)
    out["sig"] = key.sign(signed_bytes(domain, out)).hex()
    return out


def verify(message: Mapping[str, Any], domain: str, keys: Mapping[str, Ed25519PublicKey], what: str) -> None:
    """SignatureError unless `message` is signed for `domain` by one of `keys` (by its key_id)."""
    kid, sig = message.get("key_id"), message.get("sig")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise SignatureError(f"{what}: not signed (no key_id or sig)")
    public = keys.get(kid)
    if public is None:
        raise SignatureError(f"{what}: signed with hub key {kid!r}, which this device does not trust (unknown or revoked)")
    try:
        public.verify(bytes.fromhex(sig), signed_bytes(domain, message))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"{what}: signature does not verify with hub key {kid}: forged or altered") from exc
