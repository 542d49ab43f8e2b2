"""The hub's half of a device enrollment upload (`devices/<id>/enroll`; the device's half is
`sync.uploads.enrollment_message`).

`check_enrollment` is the gate, in this order, before anything is opened or stored: schema → the
device is registered → the message's `device` is the device of the topic → the Ed25519 signature
verifies with that device's registered sign key → the hub holds the device's audit record
`audit_seq` (audit batches travel before the upload; a miss is refused and the device re-sends on
its ack timeout), of kind `enroll`, with hash `audit_hash` and `person_uid` = `uid` → the sealed
persons open with the hub's X25519 key, check like bundle persons (`sync.bundle.PERSON`) and are
all the signed uid. Every failure is an `UploadError` (a `ProtocolError`); what happens to a
checked upload is `sync.hub.review`'s business.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.audit.records import canonical_json
from edge.errors import ProtocolError
from edge.gallery.changes import SyncPerson
from sync import protocol, sealing
from sync.bundle import HUB_RECIPIENT, PERSON, enrollment_aad, person_from_doc
from sync.hub.store import HubStore, HubStoreError

# The same bytes as sync.uploads.enrollment_signed_bytes (the hub imports no device module).
_SIGN_DOMAIN = "facegate/v1/enrollment"


class UploadError(ProtocolError):
    """An enrollment upload is refused: unregistered device, topic and message disagree, the
    device's signature does not verify, or it does not match the device's `enroll` audit record."""


class UploadNotAuditedError(UploadError):
    """The hub does not hold the audit record an upload names yet; the device re-sends it."""


def _signed_bytes(message: dict[str, Any]) -> bytes:
    return (_SIGN_DOMAIN + "\x00" + canonical_json({k: v for k, v in message.items() if k != "sig"})).encode()


def open_enrollment(payload: bytes, hub_private: X25519PrivateKey) -> tuple[dict[str, Any], list[SyncPerson]]:
    """The schema-checked message and the persons it carries, opened with the hub's key; no trust
    check (`check_enrollment` is the hub's gate; test hubs use this one)."""
    message = protocol.decode(payload, "enrollment")
    try:
        blob = base64.b64decode(message["sealed"], validate=True)
    except binascii.Error as exc:
        raise protocol.SchemaError(f"enrollment.sealed: not base64 ({exc})") from exc
    plain = sealing.unseal(hub_private, HUB_RECIPIENT, message["eph"], message["recipients"], blob, enrollment_aad(message["device"], message["uid"]))
    try:
        inner = protocol.obj({"persons": protocol.list_of(PERSON, 16)})(json.loads(plain), "enrollment content")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise protocol.SchemaError(f"enrollment content: not JSON ({exc})") from exc
    return message, [person_from_doc(d, f"enrollment.persons[{i}]") for i, d in enumerate(inner["persons"])]


def _check_audit(store: HubStore, device_id: str, message: dict[str, Any]) -> None:
    seq, uid = message["audit_seq"], message["uid"]
    found = [r for r in store.audit_chain(device_id, seq - 1, 1) if r.seq == seq]
    if not found:
        raise UploadNotAuditedError(f"enrollment of {uid} names audit record {seq} of {device_id}, which the hub does not hold yet")
    record = found[0]
    if record.kind != "enroll" or record.hash != message["audit_hash"] or record.body.get("person_uid") != uid:
        raise UploadError(f"enrollment of {uid} does not match {device_id}'s audit record {seq} (a {record.kind} record): forged or altered")


def check_enrollment(store: HubStore, topic_device: str, payload: bytes, hub_private: X25519PrivateKey) -> tuple[dict[str, Any], list[SyncPerson]]:
    """The verified message and its persons, from an upload that arrived on `topic_device`'s
    enroll topic; UploadError (or another ProtocolError) otherwise, with nothing stored."""
    message = protocol.decode(payload, "enrollment")
    try:
        device = store.device(topic_device)
    except HubStoreError as exc:
        raise UploadError(f"enrollment on the topic of unregistered device {topic_device!r}") from exc
    if message["device"] != topic_device:
        raise UploadError(f"enrollment on {topic_device}'s topic claims device {message['device']!r}")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(device.sign_pub)).verify(bytes.fromhex(message["sig"]), _signed_bytes(message))
    except (InvalidSignature, ValueError) as exc:
        raise UploadError(f"enrollment of {message['uid']}: signature does not verify with {topic_device}'s key: forged or altered") from exc
    _check_audit(store, topic_device, message)
    message, persons = open_enrollment(payload, hub_private)
    if not persons or any(p.uid != message["uid"] for p in persons):
        raise UploadError(f"enrollment of {message['uid']}: the sealed content holds no person or another uid")
    return message, persons
