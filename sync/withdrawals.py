"""A kiosk consent withdrawal on its way to the hub (`devices/<id>/enroll`, type `withdrawal`).

`withdraw` at the kiosk (edge/outputs/withdraw.py) erases the person on the device and writes a
`remove` audit record by `kiosk-withdrawal`. When the agent copies that record into the outbox it
queues this message right after it: the uid, the record it names (`audit_seq`, `audit_hash`) and
the device's Ed25519 signature (the key of its audit trail) over every other field under its own
domain, so the hub erases only what this device audited, never what someone published on its
topic. It replaces an enrollment upload of the same person still waiting in the outbox (the hub
needs no longer the face of someone who withdrew). The hub's half is sync/hub/withdrawals.py.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit.records import AuditRecord, canonical_json
from sync import protocol

SIGN_DOMAIN = "facegate/v1/withdrawal"
BY = "kiosk-withdrawal"  # the `by` of the device's remove record (edge.outputs.withdraw.BY)


def withdrawal_signed_bytes(message: dict[str, Any]) -> bytes:
    return (SIGN_DOMAIN + "\x00" + canonical_json({k: v for k, v in message.items() if k != "sig"})).encode()


def withdrawal_message(device_id: str, record: AuditRecord, signing_key: Ed25519PrivateKey) -> tuple[str, str] | None:
    """(uid, signed message) for a kiosk withdrawal's `remove` record; None for any other record."""
    uid = record.body.get("person_uid")
    if record.kind != "remove" or record.body.get("by") != BY or not isinstance(uid, str):
        return None
    message: dict[str, Any] = {"v": protocol.VERSION, "type": "withdrawal", "device": device_id, "uid": uid,
                               "audit_seq": record.seq, "audit_hash": record.hash}
    message["sig"] = signing_key.sign(withdrawal_signed_bytes(message)).hex()
    return uid, protocol.encode(message).decode()
