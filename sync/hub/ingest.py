"""The hub's check of a device's audit stream: in order, exactly once, chain and signature intact.

`AuditIngest.receive(device_id, payload)` accepts the records that extend what it holds for that
device (seq = last + 1, `prev` = last hash, signed by the device's registered key), skips
duplicates (seq ≤ last: a resend after a reconnect), and stops at a gap or at the first record
that fails (a break is reported, never skipped over). The answer's `ack` is what the hub
publishes on `devices/<id>/ack`: everything up to `last` may leave the device's outbox.
The hub service (sync/hub/service.py) persists `state` in its store; tests and the bench keep it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.audit.records import GENESIS, AuditRecord, check_record
from sync import protocol
from sync.protocol import ProtocolError


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: tuple[AuditRecord, ...]
    duplicates: int
    problem: str  # '' or why the stream stopped (gap, broken chain, bad signature)
    ack: bytes  # the ack message for devices/<id>/ack


@dataclass
class AuditIngest:
    device_keys: dict[str, Ed25519PublicKey]
    state: dict[str, tuple[int, str]] = field(default_factory=dict)  # device → (last seq, last hash)

    def receive(self, device_id: str, payload: bytes) -> IngestResult:
        if device_id not in self.device_keys:
            raise ProtocolError(f"audit from unregistered device {device_id!r}")
        message = protocol.decode(payload, "audit")
        if message["device"] != device_id:
            raise ProtocolError(f"audit on {device_id}'s topic claims to come from {message['device']!r}")
        last, prev = self.state.get(device_id, (0, GENESIS))
        accepted: list[AuditRecord] = []
        duplicates, problem = 0, ""
        for raw in message["records"]:
            record = AuditRecord(**raw)
            if record.seq <= last:
                duplicates += 1
                continue
            if record.seq != last + 1:
                problem = f"gap: expected record {last + 1}, got {record.seq}; waiting for the resend"
                break
            problem = check_record(record, self.device_keys[device_id], prev)
            if problem:
                break
            accepted.append(record)
            last, prev = record.seq, record.hash
        self.state[device_id] = (last, prev)
        return IngestResult(tuple(accepted), duplicates, problem, ack_message(last))


def ack_message(audit_upto: int | None = None, enrollments: list[str] | None = None) -> bytes:
    message: dict[str, Any] = {"v": protocol.VERSION, "type": "ack"}
    if audit_upto is not None:
        message["audit_upto"] = audit_upto
    if enrollments:
        message["enrollments"] = enrollments
    return protocol.encode(message)
