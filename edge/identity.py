"""The device's own key pairs, kept next to the gallery: who signs the audit trail, who opens bundles.

- Ed25519 (`device_sign.key`): signs every audit record, so the hub can tell a record this
  device wrote from one written by anybody else.
- X25519 (`device_seal.key`): gallery bundles from the hub carry their templates sealed to this
  key, so a bundle copied to another device (or read off the broker) opens nowhere else.

Both are raw 32-byte private keys, written once (0600, fsynced, renamed into place) and never
overwritten: a new key would orphan every record signed and every bundle sealed with the old one.
Their public halves are what an admin registers on the hub (`facegate sync identity`).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from edge.atomic_file import write_new
from edge.errors import KeyfileError

SIGN_KEY_FILE = "device_sign.key"
SEAL_KEY_FILE = "device_seal.key"
_RAW = 32


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _read(path: Path) -> bytes:
    try:
        st = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyfileError(f"{path}: cannot read device key ({exc.strerror or exc})") from exc
    if st.st_mode & 0o077:
        raise KeyfileError(f"{path}: device key is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
    if len(raw) != _RAW:
        raise KeyfileError(f"{path}: not a device key ({len(raw)} bytes, expected {_RAW}); restore it from a backup")
    return raw


def _load_or_create(path: Path, create: bool) -> bytes:
    if not path.exists():
        if not create:
            raise KeyfileError(f"{path}: device key missing; it is created by the first audited action or `facegate sync identity`")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cls = Ed25519PrivateKey if path.name == SIGN_KEY_FILE else X25519PrivateKey
        write_new(path, _raw_private(cls.generate()))  # another process's key, made meanwhile, wins
    return _read(path)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    signing_key: Ed25519PrivateKey
    sealing_key: X25519PrivateKey

    @classmethod
    def open(cls, data_dir: Path, create: bool = True) -> DeviceIdentity:
        data_dir = Path(data_dir)
        sign = Ed25519PrivateKey.from_private_bytes(_load_or_create(data_dir / SIGN_KEY_FILE, create))
        seal = X25519PrivateKey.from_private_bytes(_load_or_create(data_dir / SEAL_KEY_FILE, create))
        return cls(sign, seal)

    def public(self) -> dict[str, str]:
        """Hex public keys, as the hub registers them."""
        return {
            "sign_public_key": raw_public(self.signing_key.public_key()).hex(),
            "seal_public_key": raw_public(self.sealing_key.public_key()).hex(),
        }


def load_signing_key(data_dir: Path, create: bool = True) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_load_or_create(Path(data_dir) / SIGN_KEY_FILE, create))
