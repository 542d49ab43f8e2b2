"""Sealing to X25519 public keys: one content key per message, wrapped for each recipient.

A message for several devices (a group bundle) is encrypted once with a random AES-256-GCM
content key; the key is wrapped for each recipient with a key derived (HKDF-SHA256) from an
X25519 exchange between a fresh ephemeral key and that recipient's public key. A recipient
needs its own private key to open the message; everyone else, the broker included, sees noise.
The same scheme carries device enrollments to the hub (one recipient: the hub's key).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.errors import ProtocolError
from edge.identity import raw_public

_INFO = b"facegate/v1/seal"
_NONCE = 12


class NotForThisKey(ProtocolError):
    """The message was sealed for other recipients, or to another key of this recipient."""


def _wrapping_key(shared: bytes, eph_public: bytes, recipient_public: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=SHA256(), length=32, salt=eph_public + recipient_public, info=_INFO).derive(shared))


def wrap_key(content_key: bytes, recipients: dict[str, X25519PublicKey], aad: bytes) -> tuple[str, dict[str, str]]:
    """(ephemeral public key hex, {recipient: `content_key` wrapped for it, hex})."""
    eph = X25519PrivateKey.generate()
    eph_public = raw_public(eph.public_key())
    wrapped = {}
    for name, public in recipients.items():
        nonce = os.urandom(_NONCE)
        key = _wrapping_key(eph.exchange(public), eph_public, raw_public(public))
        wrapped[name] = (nonce + key.encrypt(nonce, content_key, aad + name.encode())).hex()
    return eph_public.hex(), wrapped


def unwrap_key(private: X25519PrivateKey, name: str, eph_public_hex: str, wrapped: dict[str, str], aad: bytes) -> bytes:
    """The content key `wrap_key` wrapped for `name`; NotForThisKey otherwise."""
    if name not in wrapped:
        raise NotForThisKey(f"sealed for {', '.join(sorted(wrapped)) or 'nobody'}, not for {name}")
    try:
        eph_public = bytes.fromhex(eph_public_hex)
        blob = bytes.fromhex(wrapped[name])
        key = _wrapping_key(private.exchange(X25519PublicKey.from_public_bytes(eph_public)), eph_public, raw_public(private.public_key()))
        return key.decrypt(blob[:_NONCE], blob[_NONCE:], aad + name.encode())
    except (InvalidTag, ValueError) as exc:
        raise NotForThisKey(f"not sealed to this key of {name} (or altered in transit): re-register the device's public key on the hub") from exc


def seal_with(content_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(content_key).encrypt(nonce, plaintext, aad)


def open_with(content_key: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
    try:
        return AESGCM(content_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise NotForThisKey(f"{what}: not sealed under this key (or altered in transit)") from exc


def seal(plaintext: bytes, recipients: dict[str, X25519PublicKey], aad: bytes) -> tuple[str, dict[str, str], bytes]:
    """(ephemeral public key hex, {recipient: wrapped content key hex}, nonce ‖ ciphertext)."""
    content_key = AESGCM.generate_key(bit_length=256)
    eph, wrapped = wrap_key(content_key, recipients, aad)
    return eph, wrapped, seal_with(content_key, plaintext, aad)


def unseal(private: X25519PrivateKey, name: str, eph_public_hex: str, wrapped: dict[str, str], sealed: bytes, aad: bytes) -> bytes:
    content_key = unwrap_key(private, name, eph_public_hex, wrapped, aad)
    return open_with(content_key, sealed, aad, f"message for {name}")
