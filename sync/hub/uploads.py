"""The hub's half of a device enrollment upload (`devices/<id>/enroll`; the device's half is
`sync.uploads.enrollment_message`): the message checked, the sealed persons opened with the hub's
X25519 key and checked like bundle persons (`sync.bundle.PERSON`)."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.gallery.changes import SyncPerson
from sync import protocol, sealing
from sync.bundle import HUB_RECIPIENT, PERSON, enrollment_aad, person_from_doc


def open_enrollment(payload: bytes, hub_private: X25519PrivateKey) -> tuple[dict[str, Any], list[SyncPerson]]:
    """The hub's half: the checked message and the persons it carries."""
    message = protocol.decode(payload, "enrollment")
    plain = sealing.unseal(hub_private, HUB_RECIPIENT, message["eph"], message["recipients"], base64.b64decode(message["sealed"]), enrollment_aad(message["device"], message["uid"]))
    try:
        inner = protocol.obj({"persons": protocol.list_of(PERSON, 16)})(json.loads(plain), "enrollment content")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise protocol.SchemaError(f"enrollment content: not JSON ({exc})") from exc
    return message, [person_from_doc(d, f"enrollment.persons[{i}]") for i, d in enumerate(inner["persons"])]
