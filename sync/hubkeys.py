"""The hub signing keys a device trusts, kept across restarts: `<data_dir>/hub_keys.json`.

A `HubKeyring` is a Mapping key id → Ed25519 public key (what `sync.signing.verify` takes), so
the agent checks every signed hub message against it. It starts from `[sync] hub_sign_key_file`
and changes only through `key_rotation` messages (`sync.protocol`, retained on
`facegate/v1/hub/keys/<key id>`, published by `facegate hub rotate-signing-key` /
`revoke-signing-key`, `sync.hub.keys`), each signed by a key this device already trusts:

- `new_key` becomes trusted, unless this device revoked it before (the whole message is refused);
- every id in `revoke` is revoked for good: dropped from the trusted keys and remembered, so that
  neither a later rotation nor `hub_sign_key_file` can bring it back (a revoked key named by the
  config is logged as such, and the device refuses to start if no trusted key is left).

A rotation signed by a key not (yet) trusted is refused and held in memory: when a later rotation
adds its signer (a device that was away through several rotations gets them all, in any order,
from the retained topics), it is tried again. The file is public keys and ids only, written
atomically (temporary file, fsync, rename), mode 0600.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.atomic_file import write_atomic
from edge.errors import ConfigError
from edge.identity import raw_public
from sync import protocol, signing
from sync.protocol import SchemaError, SignatureError

KEYRING_FILE = "hub_keys.json"
ROTATION_DOMAIN = "facegate/v1/key_rotation"
_PENDING_MAX = 64  # rotations waiting for their signer; the oldest is dropped past this
_LOG = logging.getLogger(__name__)


class UntrustedSignerError(SignatureError):
    """A key rotation signed by a hub key this device does not trust (yet): held, tried again later."""


class RevokedKeyError(SignatureError):
    """A key rotation that would trust a hub key this device revoked before."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One applied key rotation: what the device's `key` audit record says."""

    new_key_id: str
    signed_by: str
    added: bool  # False when the key was already trusted (a re-announcement)
    revoked: tuple[str, ...]  # ids newly revoked by it

    def audit_body(self) -> dict[str, Any]:
        return {"action": "hub_key_rotation", "new_key_id": self.new_key_id, "signed_by": self.signed_by,
                "added": self.added, "revoked": list(self.revoked)}


class HubKeyring(Mapping[str, Ed25519PublicKey]):
    def __init__(self, path: Path, trusted: dict[str, dict[str, Any]], revoked: dict[str, int]) -> None:
        self.path = path
        self._trusted = trusted  # key id -> {"key": hex, "added": unix s, "by": "config" | "rotation:<id>"}
        self._keys = {kid: Ed25519PublicKey.from_public_bytes(bytes.fromhex(e["key"])) for kid, e in trusted.items()}
        self._revoked = revoked  # key id -> unix s it was revoked here
        self._pending: OrderedDict[str, bytes] = OrderedDict()

    # -- Mapping: the trusted keys only -------------------------------------------------------
    def __getitem__(self, kid: str) -> Ed25519PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def revoked(self) -> dict[str, int]:
        return dict(self._revoked)

    @classmethod
    def open(cls, data_dir: Path, seed: Ed25519PublicKey | None) -> HubKeyring:
        """The keyring in `data_dir`, with `seed` (the config's hub key) trusted unless revoked."""
        path = Path(data_dir) / KEYRING_FILE
        trusted, revoked = _load(path)
        ring = cls(path, trusted, revoked)
        if seed is not None:
            kid = signing.key_id(seed)
            if kid in revoked:
                _LOG.error("sync.hub_sign_key_file names hub key %s, which a key rotation revoked on this device; it is NOT trusted. "
                           "Put the hub's current key there (`facegate hub identity --write`)", kid)
            elif kid not in ring._keys:
                ring._trust(seed, "config")
                ring._save()
        if not ring._keys:
            raise ConfigError(f"sync.hub_sign_key_file: no trusted hub signing key is left ({path} revoked every key this device knew, "
                              "including the configured one); put the hub's current key in hub_sign_key_file (`facegate hub identity --write`)")
        return ring

    # -- rotations ------------------------------------------------------------------------------
    def receive(self, payload: bytes, where: str = "key rotation") -> list[Rotation]:
        """The rotations this message made apply: itself, then any held one it unlocked (a
        re-announcement changes nothing and returns nothing). ProtocolError when refused."""
        applied = [r for r in [self._apply(payload, where)] if r is not None]
        progress = bool(applied)
        while progress:  # a new key may be the signer a held rotation waited for
            progress = False
            for name, held in list(self._pending.items()):
                try:
                    rotation = self._apply(held, name, hold=False)
                except UntrustedSignerError:
                    continue
                except protocol.ProtocolError as exc:
                    _LOG.warning("held %s refused: %s", name, exc)
                    rotation = None
                self._pending.pop(name, None)
                if rotation is not None:
                    applied.append(rotation)
                    progress = True
        return applied

    def _apply(self, payload: bytes, where: str, hold: bool = True) -> Rotation | None:
        message = protocol.decode(payload, "key_rotation")
        signer, new_id = message["key_id"], message["new_key_id"]
        if signer not in self._keys:
            if hold and signer not in self._revoked:
                self._pending[f"{where} {new_id}"] = bytes(payload)
                while len(self._pending) > _PENDING_MAX:
                    self._pending.popitem(last=False)
            state = "revoked" if signer in self._revoked else "unknown"
            raise UntrustedSignerError(f"{where}: signed with hub key {signer}, which this device does not trust ({state}); refused")
        signing.verify(message, ROTATION_DOMAIN, self, where)
        try:
            new_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(message["new_key"]))
        except ValueError as exc:
            raise SchemaError(f"{where}: new_key is not an Ed25519 public key ({exc})") from exc
        if signing.key_id(new_key) != new_id:
            raise SchemaError(f"{where}: new_key_id {new_id} is not the id of new_key ({signing.key_id(new_key)})")
        if new_id in self._revoked:
            raise RevokedKeyError(f"{where}: would trust hub key {new_id}, which this device revoked; refused")
        if new_id in message["revoke"]:
            raise SchemaError(f"{where}: revokes the key {new_id} it announces")
        added = new_id not in self._keys
        revoked = tuple(sorted(set(message["revoke"]) - set(self._revoked)))
        if not added and not revoked:
            return None
        if added:
            self._trust(new_key, f"rotation:{signer}")
        now = int(time.time())
        for kid in revoked:
            self._revoked[kid] = now
            self._trusted.pop(kid, None)
            self._keys.pop(kid, None)
        self._save()
        return Rotation(new_id, signer, added, revoked)

    def _trust(self, key: Ed25519PublicKey, by: str) -> None:
        kid = signing.key_id(key)
        self._trusted[kid] = {"key": raw_public(key).hex(), "added": int(time.time()), "by": by}
        self._keys[kid] = key

    def _save(self) -> None:
        doc = {"v": 1, "trusted": self._trusted, "revoked": self._revoked}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    if not path.exists():
        return {}, {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        trusted = {str(k): {"key": str(v["key"]), "added": int(v["added"]), "by": str(v["by"])} for k, v in doc["trusted"].items()}
        revoked = {str(k): int(v) for k, v in doc["revoked"].items()}
        for kid, entry in trusted.items():
            if signing.key_id(Ed25519PublicKey.from_public_bytes(bytes.fromhex(entry["key"]))) != kid:
                raise ValueError(f"key id {kid} does not match its key")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a readable hub keyring ({exc}); restore it from a backup, or delete it to start again from "
                          "sync.hub_sign_key_file (its revocations would be forgotten)") from exc
    return {k: v for k, v in trusted.items() if k not in revoked}, revoked  # revoked wins, whatever the file says
