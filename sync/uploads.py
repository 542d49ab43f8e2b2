"""Enrollments made on the device, on their way to the hub (`devices/<id>/enroll`).

A kiosk that enrolls a consenting customer must tell the hub, which then puts the person in the
bundles of that device's enroll groups, or in front of an admin (docs/hub.md, review). The upload
holds the person's profile (consent and retention fields included) and templates, sealed to the
hub's X25519 key (`sync.sealing`): the broker and other devices see noise. It is built when the
agent picks the `enroll` audit record up, names that record (`audit_seq`, `audit_hash`), and is
signed with the device's Ed25519 key (the one that signs its audit trail) over every other field,
so the hub can tell an upload this device made from one published on its topic by anybody else.
It travels through the outbox like an audit record (deleted on the hub's ack). The hub checks and
opens it with `sync.hub.uploads.check_enrollment`. A kiosk consent withdrawal takes the same way
(`outbox_upload`, sync.withdrawals).
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.audit.records import AuditRecord, canonical_json
from edge.gallery.changes import SyncPerson
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import local_person
from sync import protocol, sealing
from sync.bundle import HUB_RECIPIENT, enrollment_aad, person_doc
from sync.withdrawals import withdrawal_message

SIGN_DOMAIN = "facegate/v1/enrollment"
Upload = tuple[str, str] | tuple[str, str, bool]  # (person uid, message[, replaces that person's waiting upload])


def enrollment_signed_bytes(message: dict[str, Any]) -> bytes:
    """What the device signs: the domain, then the canonical JSON of every field but `sig` (the
    habit of `sync.bundle`; `sync.hub.uploads` rebuilds the same bytes to verify)."""
    return (SIGN_DOMAIN + "\x00" + canonical_json({k: v for k, v in message.items() if k != "sig"})).encode()


def enrollment_message(store: GalleryStore, device_id: str, person_uid: str, audit_seq: int, hub_key: X25519PublicKey,
                       signing_key: Ed25519PrivateKey, audit_hash: str) -> str | None:
    """The signed, sealed upload of `person_uid`, built from the device's `enroll` audit record
    `audit_seq` whose hash is `audit_hash`; None when the person is no longer in the gallery."""
    found = local_person(store, person_uid)
    if found is None:
        return None
    person, per_model = found
    docs = [
        person_doc(SyncPerson(person.uid, person.profile, model, tuple(t.embedding for t in templates), tuple(t.quality for t in templates)))
        for model, templates in per_model.items()
        if templates
    ]
    eph, wrapped, blob = sealing.seal(canonical_json({"persons": docs}).encode(), {HUB_RECIPIENT: hub_key}, enrollment_aad(device_id, person_uid))
    message: dict[str, Any] = {
        "v": protocol.VERSION, "type": "enrollment", "device": device_id, "uid": person_uid, "audit_seq": audit_seq, "audit_hash": audit_hash,
        "eph": eph, "recipients": wrapped, "sealed": base64.b64encode(blob).decode(),
    }
    message["sig"] = signing_key.sign(enrollment_signed_bytes(message)).hex()
    return protocol.encode(message).decode()


def outbox_upload(store: GalleryStore, device_id: str, record: AuditRecord, hub_key: X25519PublicKey | None,
                  signing_key: Ed25519PrivateKey) -> Upload | None:
    """What the outbox sends the hub after `record`: a kiosk withdrawal (replacing the person's
    enrollment upload if it still waits), an enrollment upload (with the hub's seal key), or nothing."""
    withdrawal = withdrawal_message(device_id, record, signing_key)
    if withdrawal is not None:
        return (*withdrawal, True)
    uid = record.body.get("person_uid")
    if hub_key is None or record.kind != "enroll" or not isinstance(uid, str):
        return None
    message = enrollment_message(store, device_id, uid, record.seq, hub_key, signing_key, record.hash)
    return None if message is None else (uid, message)
