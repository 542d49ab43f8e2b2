"""The audit record format, shared by the device's journal (`edge.audit.journal`) and the hub.

A record is (seq, time, kind, body, prev, hash, sig): `hash` covers the other fields, the body in
its canonical JSON spelling, and `prev` is the hash of the record before it (GENESIS for the
first), so removing, reordering or editing a record breaks the chain at that point; `sig` is the
device's Ed25519 signature of the hash (`edge.identity`), so forging one needs the device key.
`check_record` is the one check of a record against its predecessor and the device key: the
journal's `verify()` and the hub's ingest both run it.

Nothing here touches a file: this module is what the hub needs of the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import AuditError

GENESIS = "0" * 64  # the `prev` of the first record
# start/stop bracket each `facegate run`: a gap between a stop and the next start is downtime.
# match_rejected / negatives_cleared: `gallery reject-match` and `gallery negatives --clear` (uids only).
KINDS = (
    "decision", "enroll", "remove", "key", "config_reload", "config_reload_refused", "rejected_message", "gallery_update", "sync", "start", "stop", "door_event",
    "match_rejected", "negatives_cleared", "checkpoint",
)
CHECKPOINT = "checkpoint"  # a prune's record: the pruned chain's head and the hub ack that allowed it (edge.audit.retention)
_DOMAIN = b"facegate/audit/v1\x00"


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces, no NaN), so a hash computed here is the
    hash the hub computes after a JSON round trip."""
    try:
        # ensure_ascii=False is the spelling, but CPython's encoder is ~3.5x slower on it (a
        # 4 MB bundle's signature check: 37 ms vs 10 ms). With no backslash-u in the ASCII-escaped
        # output, the text held nothing either spelling writes as a \uXXXX escape (no non-ASCII,
        # no DEL, no control character but the \n-style ones), so the two are the same bytes.
        ascii_text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        if "\\u" not in ascii_text:
            return ascii_text
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit body is not plain JSON (numbers must be finite; no bytes or objects): {exc}") from exc


def record_hash(seq: int, ts_us: int, kind: str, body_json: str, prev: str) -> str:
    head = canonical_json({"seq": seq, "ts_us": ts_us, "kind": kind, "prev": prev})
    return hashlib.sha256(_DOMAIN + head.encode() + b"\x00" + body_json.encode()).hexdigest()


def sign_hash(key: Ed25519PrivateKey, digest: str) -> str:
    """The record's `sig`: the hex Ed25519 signature of the hash's bytes."""
    return key.sign(bytes.fromhex(digest)).hex()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts_us: int  # unix time in microseconds: an integer, so it hashes the same everywhere
    kind: str
    body: dict[str, Any]
    prev: str  # hex sha256 of the previous record (GENESIS for the first)
    hash: str
    sig: str  # hex Ed25519 signature of bytes.fromhex(hash)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts_us": self.ts_us, "kind": self.kind, "body": self.body, "prev": self.prev, "hash": self.hash, "sig": self.sig}


def check_record(record: AuditRecord, public_key: Ed25519PublicKey, prev: str) -> str:
    """'' when `record` follows a record hashed `prev` and is signed by `public_key`; else why not.
    The hub runs the same check on every record it ingests."""
    if record.prev != prev:
        return f"record {record.seq}: chain broken (prev {record.prev[:16]}…, expected {prev[:16]}…): a record before it was removed, reordered or altered"
    try:
        body_json = canonical_json(record.body)
    except AuditError as exc:
        return f"record {record.seq}: {exc}"
    if record_hash(record.seq, record.ts_us, record.kind, body_json, record.prev) != record.hash:
        return f"record {record.seq}: hash does not match its contents: the record was altered"
    try:
        public_key.verify(bytes.fromhex(record.sig), bytes.fromhex(record.hash))
    except (InvalidSignature, ValueError):
        return f"record {record.seq}: signature does not verify with the device key: forged or altered"
    return ""


def summarize(record: AuditRecord) -> str:
    """One line for `audit tail`."""
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.ts_us / 1e6))
    body = canonical_json(record.body)
    return f"{record.seq:>8}  {at}  {record.kind:<16} {body if len(body) <= 160 else body[:157] + '...'}"
