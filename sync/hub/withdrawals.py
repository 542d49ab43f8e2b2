"""The hub's half of a kiosk consent withdrawal (`devices/<id>/enroll`, type `withdrawal`; the
device's half is sync.withdrawals).

`check_withdrawal` is the gate, before anything is erased: schema → the device is registered →
the message's `device` is the topic's → the Ed25519 signature verifies with that device's
registered key (domain `facegate/v1/withdrawal`) → the hub holds the device's audit record
`audit_seq`, a `remove` by `kiosk-withdrawal` of that uid with hash `audit_hash` (audit batches
travel first; a miss is `UploadNotAuditedError` and the device sends again on its ack timeout) →
the person is one this device could have recognised: in one of its groups, or enrolled by it (a
stolen kiosk key must not erase the rest of the fleet's people by uid).
`apply_withdrawal` then erases the person as `admin person erase` does (crypto-erase here, an
erasure owed to every device, a `hub_audit` entry by `kiosk-withdrawal`) and rejects a pending
review item of that uid (its held face is crypto-erased); the service then pushes full bundles
at once, which carry the erase to the fleet. A second delivery of the same withdrawal finds
nothing left to erase and is acked again.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.audit.records import canonical_json
from sync import protocol
from sync.hub.review import ReviewQueue
from sync.hub.store import HubStore, HubStoreError
from sync.hub.uploads import UploadError, UploadNotAuditedError

# The same as sync.withdrawals (the hub imports no device module).
_SIGN_DOMAIN = "facegate/v1/withdrawal"
BY = "kiosk-withdrawal"


def is_withdrawal(payload: bytes) -> bool:
    """Whether a message on the enroll topic says it is a withdrawal (checked in full after)."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("type") == "withdrawal"


def check_withdrawal(store: HubStore, topic_device: str, payload: bytes) -> dict[str, Any]:
    """The verified withdrawal that arrived on `topic_device`'s enroll topic; UploadError else."""
    message = protocol.decode(payload, "withdrawal")
    uid = message["uid"]
    try:
        device = store.device(topic_device)
    except HubStoreError as exc:
        raise UploadError(f"withdrawal from unregistered device {topic_device!r}") from exc
    if message["device"] != topic_device:
        raise UploadError(f"withdrawal on {topic_device}'s topic claims to come from {message['device']!r}")
    signed = (_SIGN_DOMAIN + "\x00" + canonical_json({k: v for k, v in message.items() if k != "sig"})).encode()
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(device.sign_pub)).verify(bytes.fromhex(message["sig"]), signed)
    except (InvalidSignature, ValueError) as exc:
        raise UploadError(f"withdrawal of {uid}: signature does not verify with {topic_device}'s key: forged or altered") from exc
    seq = message["audit_seq"]
    found = [r for r in store.audit_chain(topic_device, seq - 1, 1) if r.seq == seq]
    if not found:
        raise UploadNotAuditedError(f"withdrawal of {uid} names audit record {seq} of {topic_device}, which the hub does not hold yet")
    record = found[0]
    if record.kind != "remove" or record.hash != message["audit_hash"] or record.body.get("person_uid") != uid or record.body.get("by") != BY:
        raise UploadError(f"withdrawal of {uid} does not match {topic_device}'s audit record {seq} (a {record.kind} record): forged or altered")
    ReviewQueue(store)  # its tables (uploads: who enrolled whom) exist from here on
    live = store.db.execute("SELECT groups_json FROM persons WHERE uid=? AND erased IS NULL", (uid,))
    mine = store.db.execute("SELECT 1 FROM uploads WHERE device=? AND uid=?", (topic_device, uid))
    if live and not mine and not set(json.loads(live[0][0])) & set(device.groups):
        raise UploadError(f"withdrawal of {uid} from {topic_device}: that person is in none of its groups and was not enrolled there, "
                          "so it cannot have recognised them: refused")
    return message


def apply_withdrawal(store: HubStore, device_id: str, message: dict[str, Any]) -> bool:
    """Erases the withdrawn person (and their held review item); True when anything was erased now."""
    uid, history = message["uid"], ReviewQueue(store)
    erased = bool(store.db.execute("SELECT 1 FROM persons WHERE uid=? AND erased IS NULL", (uid,)))
    if erased:
        store.erase_person(uid)
    held = [int(r[0]) for r in store.db.execute("SELECT id FROM reviews WHERE uid=? AND state='pending'", (uid,))]
    for item in held:
        history.reject(item, by=BY)
    if erased or held:
        history.record("erase", uid, {"by": BY, "device": device_id, "audit_seq": message["audit_seq"], "devices": len(store.erasures(uid))})
    return erased
