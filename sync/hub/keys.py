"""The hub's Ed25519 signing keys: one current, the others retired or revoked, and the signed
`key_rotation` messages that tell devices (`sync.hubkeys`) which to trust.

Files in `<data_dir>/keys/`: `device_sign.key` is the first key (made with the hub's identity,
`edge.identity`); each rotation adds `hub_sign_<key id>.key` (raw 32 bytes, 0600, never
overwritten); `hub_sign_keys.json` says which is current and what became of the others, and
keeps every announcement it published (to publish again if a broker lost its retained store).

The scheme (docs/hub.md, signing keys):
1. `facegate hub rotate-signing-key` makes a new key and publishes, retained on
   `facegate/v1/hub/keys/<new id>`, `{new_key, new_key_id, revoke: [], created}` signed by the
   CURRENT key; devices that trust it add the new one. Only after the broker took it does the hub
   switch: every signed message afterwards (bundles, acks) uses the new key; the old one is
   `retired`, still trusted by devices, so nothing in flight is refused.
2. `facegate hub revoke-signing-key OLD_ID`, once every device has audited the new key (the hub
   checks its audit trail; `--force` skips that), publishes a re-announcement of the current key
   with `revoke: [OLD_ID]`, signed by the current key, on the same topic. Devices drop OLD_ID for
   good. `rotate-signing-key --revoke-old` does both in one message (signed by the old key, which
   revokes itself): for a key that must stop being trusted at once, at the price of devices that
   are away missing nothing but bundles signed meanwhile by the new key, which they take on return.
A device that was away through several rotations finds each rotation retained on its own topic
and applies them in any order (`sync.hubkeys`); one that missed a rotation whose signer was revoked
meanwhile is stranded by design (it must not learn keys through a revoked key): give it the
current key in `hub_sign_key_file` (`facegate hub identity --write`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from edge.atomic_file import write_atomic
from edge.errors import FacegateError, KeyfileError
from edge.gallery.crypto import fsync_dir
from edge.identity import SIGN_KEY_FILE, raw_public
from sync import protocol, signing
from sync.hubkeys import ROTATION_DOMAIN

STATE_FILE = "hub_sign_keys.json"


class HubKeyError(FacegateError):
    """A signing-key request names an unknown key, the current one, or would strand devices."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A signed `key_rotation` message, and the retained topic it goes to."""

    topic: str
    payload: bytes
    new_key_id: str
    signed_by: str
    revoke: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: str
    file: str
    created: int
    state: str  # current | retired | revoked


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        st = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyfileError(f"{path}: cannot read hub signing key ({exc.strerror or exc}); restore it from a backup") from exc
    if st.st_mode & 0o077 or len(raw) != 32:
        raise KeyfileError(f"{path}: not a private hub signing key (mode {st.st_mode & 0o777:04o}, {len(raw)} bytes; want 0600, 32 bytes)")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _write_new_key(path: Path, key: Ed25519PrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _raw(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


class HubSigningKeys:
    def __init__(self, keys_dir: Path, first: Ed25519PrivateKey) -> None:
        """`first`: the key in `keys_dir/device_sign.key` (the hub identity's), current until a rotation."""
        self.dir = Path(keys_dir)
        self.path = self.dir / STATE_FILE
        if self.path.exists():
            try:
                self._state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
                self._state["keys"][self._state["current"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise KeyfileError(f"{self.path}: not a readable hub key list ({exc}); restore it from a backup") from exc
        else:
            kid = signing.key_id(first.public_key())
            self._state = {"v": 1, "current": kid, "keys": {kid: {"file": SIGN_KEY_FILE, "created": 0, "state": "current"}}, "announcements": {}}

    def entries(self) -> list[KeyEntry]:
        return [KeyEntry(kid, e["file"], e["created"], e["state"]) for kid, e in sorted(self._state["keys"].items(), key=lambda kv: kv[1]["created"])]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> public key of every key not revoked: what the hub's own signed records
        (audit checkpoints, sync/hub/audit_prune.py) verify with."""
        return {e.key_id: self._key(e.key_id).public_key() for e in self.entries() if e.state != "revoked"}

    @property
    def current_id(self) -> str:
        return str(self._state["current"])

    def current(self) -> Ed25519PrivateKey:
        return self._key(self.current_id)

    def _key(self, kid: str) -> Ed25519PrivateKey:
        key = _read_key(self.dir / self._state["keys"][kid]["file"])
        if signing.key_id(key.public_key()) != kid:
            raise KeyfileError(f"{self.dir / self._state['keys'][kid]['file']}: holds another key than {kid}; restore it from a backup")
        return key

    def _announce(self, new_public_hex: str, new_id: str, revoke: tuple[str, ...], signer: Ed25519PrivateKey) -> Announcement:
        message = {"v": protocol.VERSION, "type": "key_rotation", "new_key": new_public_hex, "new_key_id": new_id, "revoke": list(revoke),
                   "created": int(time.time())}
        payload = protocol.encode(signing.sign(message, ROTATION_DOMAIN, signer))
        return Announcement(f"{protocol.HUB_KEYS_TOPIC}/{new_id}", payload, new_id, signing.key_id(signer.public_key()), revoke)

    # -- rotation: prepare (new key file), publish (the caller), commit (switch) --------------------
    def prepare_rotation(self, revoke_old: bool) -> tuple[Ed25519PrivateKey, Announcement]:
        old = self.current()
        new = Ed25519PrivateKey.generate()
        new_id = signing.key_id(new.public_key())
        _write_new_key(self.dir / f"hub_sign_{new_id}.key", new)
        revoke = (self.current_id,) if revoke_old else ()
        return new, self._announce(raw_public(new.public_key()).hex(), new_id, revoke, old)

    def abandon(self, announcement: Announcement) -> None:
        """The announcement never reached the broker: its key was never used, drop it."""
        (self.dir / f"hub_sign_{announcement.new_key_id}.key").unlink(missing_ok=True)

    def commit(self, announcement: Announcement) -> None:
        """The broker holds the announcement: the new key becomes current."""
        keys = self._state["keys"]
        keys[self.current_id]["state"] = "revoked" if self.current_id in announcement.revoke else "retired"
        keys[announcement.new_key_id] = {"file": f"hub_sign_{announcement.new_key_id}.key", "created": int(time.time()), "state": "current"}
        self._state["current"] = announcement.new_key_id
        self._remember(announcement)

    # -- revocation of a retired key ---------------------------------------------------------------
    def prepare_revocation(self, kid: str) -> Announcement:
        entry = self._state["keys"].get(kid)
        if entry is None:
            raise HubKeyError(f"no hub signing key {kid!r} (hub signing-keys lists them)")
        if kid == self.current_id:
            raise HubKeyError(f"{kid} is the current signing key: rotate first (hub rotate-signing-key), then revoke it")
        current = self.current()
        revoke = tuple(sorted({k for k, e in self._state["keys"].items() if e["state"] == "revoked"} | {kid}))
        return self._announce(raw_public(current.public_key()).hex(), self.current_id, revoke, current)

    def commit_revocation(self, announcement: Announcement) -> None:
        for kid in announcement.revoke:
            self._state["keys"][kid]["state"] = "revoked"
        self._remember(announcement)

    def announcements(self) -> list[Announcement]:
        """Every announcement still retained (one per topic), to publish again."""
        return [Announcement(a["topic"], a["payload"].encode(), a["new_key_id"], a["signed_by"], tuple(a["revoke"]))
                for a in self._state["announcements"].values()]

    def _remember(self, a: Announcement) -> None:
        self._state["announcements"][a.topic] = {"topic": a.topic, "payload": a.payload.decode(), "new_key_id": a.new_key_id,
                                                 "signed_by": a.signed_by, "revoke": list(a.revoke)}
        write_atomic(self.path, (json.dumps(self._state, indent=1, sort_keys=True) + "\n").encode())


def devices_without_key(store: Any, kid: str) -> list[str]:
    """Registered devices whose audit trail (as the hub stored it) shows no trust of hub key `kid`."""
    have = {d for d, r in store.audit_query(kind="key", limit=1_000_000) if r.body.get("new_key_id") == kid}
    return sorted(d.id for d in store.devices() if d.id not in have)
