"""Hub → device control messages on the device: signed acks, the audit anchor, resend requests.

Whoever can publish on `devices/<id>/ack` could otherwise make the device drop audit records it
never delivered (issue 18). So the hub signs every ack and resend request (sync.signing, domains
below) and names the device it is for; the device (`DeviceControl`, called by sync.agent) takes one
only when:
- it verifies with a hub key this device trusts (the agent's `_hub_keys` mapping);
- its `device` is this device (a genuine ack for another device, replayed here, is refused);
- its `audit_upto` is not above the highest record fed into the outbox (nothing unsent is acked);
- its `anchor` (seq, hash of the last record the hub holds) is this journal's record at that seq.
Anything else is refused through the agent's `reject` (audited, rate-limited) and changes nothing.
An accepted anchor is kept in `audit_anchor.json` (edge.audit.anchor) with the hub's signature,
for `facegate audit verify` to catch a journal whose tail was deleted. It is also the one thing
that lets the journal prune (edge.audit.retention, `[audit] retention_days`): only records at or
below an anchor checked here, paced by `[audit] prune_interval_s`.

A `resend` request (the hub's chain of this device stops at a gap) re-feeds the outbox from the
journal (`Outbox.refeed_audit`), bounded to the journal's range and paced: a replayed request
costs one re-feed per `RESEND_MIN_INTERVAL_S` at most, and the hub drops the duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.audit.anchor import AuditAnchor, write_anchor
from edge.audit.journal import AuditLog
from edge.audit.retention import Pruner
from edge.config.audit import AuditConfig
from edge.errors import AuditError, FacegateError
from sync import protocol, signing
from sync.outbox import Outbox
from sync.protocol import ACK_DOMAIN, RESEND_DOMAIN, ProtocolError

RESEND_MIN_INTERVAL_S = 5.0
_LOG = logging.getLogger(__name__)


class MisaddressedError(ProtocolError):
    """A signed hub message for another device: a genuine message replayed on this device's topic."""


class AckAheadError(ProtocolError):
    """An ack for audit records this device never fed to its outbox: acting on it would drop records unsent."""


class AnchorMismatchError(ProtocolError):
    """An ack whose anchor is not this journal's record: the hub holds another chain for this device."""


@dataclass(frozen=True, slots=True)
class Ack:
    audit_upto: int | None
    enrollments: tuple[str, ...]
    anchor: AuditAnchor | None


def _signed(payload: bytes, expect: str, domain: str, device_id: str, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    message = protocol.decode(payload, expect)
    signing.verify(message, domain, keys, expect)
    if message["device"] != device_id:
        raise MisaddressedError(f"{expect}: signed by the hub for device {message['device']!r}, not for {device_id}: replayed")
    return message


def check_ack(payload: bytes, device_id: str, keys: Mapping[str, Ed25519PublicKey], fed_upto: int,
              hash_at: Callable[[int], str | None]) -> Ack:
    """The ack in `payload` if this device may act on it (see the module doc); ProtocolError else.
    `fed_upto` is the highest audit seq fed to the outbox, `hash_at(seq)` the journal's hash there."""
    message = _signed(payload, "ack", ACK_DOMAIN, device_id, keys)
    upto, anchor = message.get("audit_upto"), message.get("anchor")
    if upto is not None and upto > fed_upto:
        raise AckAheadError(f"ack: acknowledges audit records up to {upto}, but this device sent only up to {fed_upto}")
    if upto and anchor is None:
        raise ProtocolError(f"ack: acknowledges audit records up to {upto} without the hub's anchor")
    if anchor is not None:
        if anchor["seq"] != upto:
            raise ProtocolError(f"ack: anchor at record {anchor['seq']}, but audit_upto is {upto}")
        mine = hash_at(anchor["seq"])
        if mine != anchor["hash"]:
            raise AnchorMismatchError(f"ack: the hub's record {anchor['seq']} has hash {anchor['hash'][:16]}…, this journal's "
                                      f"{'is missing' if mine is None else 'has ' + mine[:16] + '…'}")
    return Ack(upto, tuple(message.get("enrollments", ())), None if anchor is None else AuditAnchor.of_ack(message))


def check_resend(payload: bytes, device_id: str, keys: Mapping[str, Ed25519PublicKey]) -> int:
    """The `from_seq` of a signed resend request for this device; ProtocolError else."""
    return int(_signed(payload, "resend", RESEND_DOMAIN, device_id, keys)["from_seq"])


class DeviceControl:
    """The agent's handler for `ack` and `resend`: `ack(...)` / `resend(...)` return True when acted on."""

    def __init__(self, device_id: str, outbox: Outbox, journal: AuditLog, reject: Callable[[str, bytes, Exception], None],
                 clock: Callable[[], float] = time.monotonic, audit: AuditConfig | None = None) -> None:
        self.device_id, self._outbox, self._journal, self._reject, self._clock = device_id, outbox, journal, reject, clock
        self.pruner = Pruner(journal, audit or AuditConfig(), clock)
        self._data_dir = Path(journal.path).parent
        self._last_refeed: float | None = None

    def _hash_at(self, seq: int) -> str | None:
        record = self._journal.record(seq)
        return None if record is None else record.hash

    def ack(self, topic: str, payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> bool:
        try:
            ack = check_ack(payload, self.device_id, keys, self._outbox.audit_cursor(), self._hash_at)
        except ProtocolError as exc:
            self._reject(topic, payload, exc)
            return False
        # The anchor first: once rows leave the outbox, the hub's signed word is what proves it got them.
        if ack.anchor is not None:
            write_anchor(self._data_dir, ack.anchor)
        if ack.audit_upto is not None:
            self._outbox.ack_audit(ack.audit_upto)
        if ack.enrollments:
            self._outbox.ack_enrollments(list(ack.enrollments))
        pruned = None if ack.anchor is None else self.pruner.after_ack(ack.anchor)  # the records it covers may go (when old enough)
        if pruned is not None and pruned.pruned:
            self._outbox.checkpoint()  # their copies, deleted from the outbox by this ack, leave its WAL too
        return True

    def resend(self, topic: str, payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> bool:
        """True when the outbox was re-fed: the agent then publishes again from its oldest row."""
        try:
            from_seq = check_resend(payload, self.device_id, keys)
        except ProtocolError as exc:
            self._reject(topic, payload, exc)
            return False
        now = self._clock()
        if self._last_refeed is not None and now - self._last_refeed < RESEND_MIN_INTERVAL_S:
            _LOG.info("hub asked for audit records from %d again within %.0f s: ignored", from_seq, RESEND_MIN_INTERVAL_S)
            return False
        self._last_refeed = now
        try:
            count = self._outbox.refeed_audit(self._journal, from_seq)
        except FacegateError as exc:
            _LOG.error("cannot re-feed the outbox from record %d: %s", from_seq, exc)
            return False
        _LOG.warning("the hub's audit chain stops before record %d: %d records queued again from the journal", from_seq, count)
        try:
            self._journal.append("sync", {"action": "audit_resend", "from_seq": from_seq, "records": count})
        except AuditError as exc:  # a full disk: the records are queued again all the same; publish them
            _LOG.error("the resend is not audited: %s", exc)
        return count > 0
