"""The hub's public keys as the device reads them from `[sync] hub_sign_key_file` / `hub_seal_key_file`.

A file holds the raw key as 64 hex characters (what `facegate sync identity` and the hub print)
or a PEM SubjectPublicKeyInfo. Public keys are not secret, so no mode check; a wrong or damaged
file is a ConfigError naming the key, since a device that cannot check bundles must not start.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge.errors import ConfigError


def _read(path: str, key: str, cls: type[Ed25519PublicKey | X25519PublicKey]) -> Ed25519PublicKey | X25519PublicKey:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"sync.{key}: cannot read {path} ({exc.strerror or exc})") from exc
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            loaded = load_pem_public_key(raw)
            if not isinstance(loaded, cls):
                raise ValueError(f"a {type(loaded).__name__}, not {cls.__name__}")
            return loaded
        return cls.from_public_bytes(bytes.fromhex(raw.decode("ascii").strip()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sync.{key}: {path} is not a {cls.__name__[:-9]} public key (64 hex characters or PEM): {exc}") from exc


def hub_sign_key(path: str) -> Ed25519PublicKey:
    key = _read(path, "hub_sign_key_file", Ed25519PublicKey)
    assert isinstance(key, Ed25519PublicKey)
    return key


def hub_seal_key(path: str) -> X25519PublicKey:
    key = _read(path, "hub_seal_key_file", X25519PublicKey)
    assert isinstance(key, X25519PublicKey)
    return key
