"""Enrollments made on the device, on their way to the hub (`devices/<id>/enroll`).

A kiosk that enrolls a consenting customer must tell the hub, which then puts the person in the
bundles of that device's groups. The upload holds the person's profile (consent and retention
fields included) and templates, sealed to the hub's X25519 key (`sync.sealing`): the broker and
other devices see noise. It is built when the agent picks the `enroll` audit record up, and
travels through the outbox like an audit record (deleted on the hub's ack). The hub opens it with
`sync.hub.uploads.open_enrollment`.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.audit.records import canonical_json
from edge.gallery.changes import SyncPerson
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import local_person
from sync import protocol, sealing
from sync.bundle import HUB_RECIPIENT, enrollment_aad, person_doc


def enrollment_message(store: GalleryStore, device_id: str, person_uid: str, audit_seq: int, hub_key: X25519PublicKey) -> str | None:
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
        "v": protocol.VERSION, "type": "enrollment", "device": device_id, "uid": person_uid, "audit_seq": audit_seq,
        "eph": eph, "recipients": wrapped, "sealed": base64.b64encode(blob).decode(),
    }
    return protocol.encode(message).decode()

