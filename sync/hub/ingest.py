"""The hub's check of a device's audit stream: in order, exactly once, chain and signature intact.

`AuditIngest.receive(device_id, payload)` accepts the records that extend what it holds for that
device (seq = last + 1, `prev` = last hash, signed by the device's registered key), skips
duplicates (seq ≤ last: a resend after a reconnect), and stops at a gap or at the first record
that fails (a break is reported, never skipped over). `IngestResult.ack(device, key)` is what the
hub publishes on `devices/<id>/ack`: signed (sync.control), addressed to that device, everything
up to `upto` may leave its outbox, and `anchor` = (upto, hash of that record) is the hub's signed
word on the head of the chain it holds, which the device keeps to detect a truncated journal.
At a gap that outlives a grace, `GapWatch` says when to alert (once per gap) and when to ask the
device to resend (`resend_message`, at most once per device per interval).
The hub service (sync/hub/service.py) persists `state` in its store; tests and the bench keep it in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.audit.records import GENESIS, AuditRecord, check_record
from sync import protocol, signing
from sync.protocol import ACK_DOMAIN, RESEND_DOMAIN, ProtocolError

GAP = "gap"  # how a gap's `problem` starts (the store alerts other problems itself)


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: tuple[AuditRecord, ...]
    duplicates: int
    problem: str  # '' or why the stream stopped (gap, broken chain, bad signature)
    upto: int  # the last record the hub holds for the device after this batch (0: none)
    upto_hash: str  # its hash (GENESIS when upto is 0)

    @property
    def gap(self) -> bool:
        return self.problem.startswith(GAP)

    def ack(self, device_id: str, key: Ed25519PrivateKey) -> bytes:
        """The signed ack for devices/<device_id>/ack."""
        anchor = (self.upto, self.upto_hash) if self.upto else None
        return ack_message(device_id, key, audit_upto=self.upto, anchor=anchor)


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
                problem = f"{GAP}: expected record {last + 1}, got {record.seq}; waiting for the resend"
                break
            problem = check_record(record, self.device_keys[device_id], prev)
            if problem:
                break
            accepted.append(record)
            last, prev = record.seq, record.hash
        self.state[device_id] = (last, prev)
        return IngestResult(tuple(accepted), duplicates, problem, last, prev)


def ack_message(device_id: str, key: Ed25519PrivateKey, audit_upto: int | None = None, enrollments: list[str] | None = None,
                anchor: tuple[int, str] | None = None) -> bytes:
    """A signed ack for one device: audit records up to `audit_upto` (with the hub's `anchor`,
    (seq, hash)), and/or enrollment uploads by uid."""
    message: dict[str, Any] = {"v": protocol.VERSION, "type": "ack", "device": protocol.check_id(device_id)}
    if audit_upto is not None:
        message["audit_upto"] = audit_upto
    if anchor is not None:
        message["anchor"] = {"seq": anchor[0], "hash": anchor[1]}
    if enrollments:
        message["enrollments"] = enrollments
    return protocol.encode(signing.sign(message, ACK_DOMAIN, key))


def resend_message(device_id: str, from_seq: int, key: Ed25519PrivateKey) -> bytes:
    """A signed request for the device's audit records from `from_seq` on (devices/<id>/resend)."""
    message = {"v": protocol.VERSION, "type": "resend", "device": protocol.check_id(device_id), "from_seq": from_seq, "created": int(time.time())}
    return protocol.encode(signing.sign(message, RESEND_DOMAIN, key))


@dataclass(frozen=True, slots=True)
class GapDue:
    """What to do now about one device's open gap."""

    device: str
    from_seq: int  # the first record the hub is missing
    problem: str
    alert: bool  # first time the gap outlived the grace: store one alert
    ask: bool  # publish a signed resend request


@dataclass
class _OpenGap:
    wanted: int
    problem: str
    since: float
    alerted: bool = False
    asked: float | None = None


class GapWatch:
    """Per device: one alert per gap, and a resend request at most once every `interval_s` while
    the gap stays open (the request or its answer may be lost; a flood of gapped messages must not
    become a flood of requests). Nothing happens before `grace_s`: a record published before the
    hub's first subscription is lost by the broker and the device resends it by itself after its
    `ack_timeout_s`, which is no loss worth an alert. `observe` runs in paho's thread, `due` also
    from `HubService.tick`, hence the lock."""

    def __init__(self, grace_s: float, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self.interval_s, self._clock = grace_s, interval_s, clock
        self._open: dict[str, _OpenGap] = {}
        self._lock = threading.Lock()

    def observe(self, device_id: str, result: IngestResult) -> None:
        with self._lock:
            if not result.gap:
                if result.accepted:
                    self._open.pop(device_id, None)
                return
            wanted = result.upto + 1
            gap = self._open.get(device_id)
            if gap is None or gap.wanted != wanted:
                self._open[device_id] = _OpenGap(wanted, result.problem, self._clock())

    def due(self) -> list[GapDue]:
        """The open gaps older than the grace that need an alert or a (paced) resend request now."""
        now, out = self._clock(), []
        with self._lock:
            for device, gap in self._open.items():
                if now - gap.since < self.grace_s:
                    continue
                ask = gap.asked is None or now - gap.asked >= self.interval_s
                if ask or not gap.alerted:
                    out.append(GapDue(device, gap.wanted, gap.problem, not gap.alerted, ask))
                gap.alerted = True
                if ask:
                    gap.asked = now
        return out
