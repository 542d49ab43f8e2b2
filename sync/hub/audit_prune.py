"""Audit retention on the hub: prune each device's stored records older than `[hub]
audit_retention_days`, keep a hub-signed checkpoint, and verify the chain from it.

The hub's store is the fleet's copy of every device's chain, so it prunes on its own retention
(no one else must hold the records first). Per device, the oldest run of records written before
the cutoff goes, after the hub re-checked that run (chain and device signature: a prune must not
launder an edited record), in the transaction that upserts the device's checkpoint: (device,
seq, hash of record seq, records pruned so far), signed with the hub's signing key under its own
domain, so whoever can write the database but not read the hub key can neither move it forward
(hiding more deleted records) nor invent one. `verify_chain` starts a device's chain there and
checks that it reaches the last record the hub accepted (the device row). docs/audit.md#retention.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.audit.records import GENESIS, AuditRecord, check_record
from edge.errors import FacegateError
from sync import protocol, signing
from sync.hub.db import HubDb

CHECKPOINT_DOMAIN = "facegate/v1/hub-audit-checkpoint"
DAY_US = 86_400 * 1_000_000
_SCHEMA = ("CREATE TABLE IF NOT EXISTS audit_checkpoints (device TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL,"
           " pruned BIGINT NOT NULL, at BIGINT NOT NULL, doc TEXT NOT NULL)")
_LOG = logging.getLogger(__name__)


class CheckpointError(FacegateError):
    """A device's stored checkpoint is unsigned, signed by a key that is not the hub's, or altered."""


@dataclass(frozen=True, slots=True)
class HubCheckpoint:
    device: str
    seq: int  # records 1..seq were pruned; the stored chain goes on at seq + 1
    hash: str  # record seq's hash: the prev of record seq + 1
    pruned: int  # records pruned so far for this device
    at: int


def ensure_schema(db: HubDb) -> None:
    db.execute(_SCHEMA)


def read_checkpoint(db: HubDb, device_id: str, keys: Mapping[str, Ed25519PublicKey]) -> HubCheckpoint | None:
    """The device's checkpoint (None: never pruned); CheckpointError unless the hub signed it."""
    ensure_schema(db)
    rows = db.execute("SELECT seq, hash, pruned, at, doc FROM audit_checkpoints WHERE device=?", (device_id,))
    if not rows:
        return None
    seq, digest, pruned, at, doc = rows[0]
    try:
        message = json.loads(doc)
        if not isinstance(message, dict):
            raise ValueError(f"audit checkpoint of {device_id}: not a JSON object")
        signing.verify(message, CHECKPOINT_DOMAIN, keys, f"audit checkpoint of {device_id}")
    except (ValueError, protocol.ProtocolError) as exc:
        raise CheckpointError(f"{exc}: the checkpoint was forged or altered, the pruned range is not vouched for") from exc
    signed = (message.get("device"), message.get("seq"), message.get("hash"), message.get("pruned"))
    if signed != (device_id, seq, digest, pruned):
        raise CheckpointError(f"audit checkpoint of {device_id}: the stored row differs from what the hub signed: altered")
    return HubCheckpoint(device_id, int(seq), str(digest), int(pruned), int(at))


def verify_chain(db: HubDb, device_id: str, key_hex: str, keys: Mapping[str, Ed25519PublicKey],
                 upto: int | None = None) -> tuple[int, str, HubCheckpoint | None]:
    """(records checked, '' or the first failure, the checkpoint started from) of the stored chain,
    in pages; with `upto`, only up to that record (what a prune is about to delete)."""
    try:
        checkpoint = read_checkpoint(db, device_id, keys)
    except CheckpointError as exc:
        return 0, str(exc), None
    device_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
    prev, seq, checked = (checkpoint.hash, checkpoint.seq, 0) if checkpoint else (GENESIS, 0, 0)
    while upto is None or seq < upto:
        page = db.execute("SELECT seq, ts_us, kind, body, prev, hash, sig FROM audit WHERE device=? AND seq>? ORDER BY seq LIMIT 5000", (device_id, seq))
        if not page:
            break
        for row in page:
            record = AuditRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])
            if upto is not None and record.seq > upto:
                return checked, "", checkpoint
            if record.seq != seq + 1:
                after = f" (records 1..{checkpoint.seq} were pruned)" if checkpoint else ""
                return checked, f"record {seq + 1} is missing (next stored is {record.seq}){after}", checkpoint
            problem = check_record(record, device_key, prev)
            if problem:
                return checked, problem, checkpoint
            prev, seq, checked = record.hash, record.seq, checked + 1
    return checked, "" if upto is not None else _reaches_head(db, device_id, seq, prev), checkpoint


def _reaches_head(db: HubDb, device_id: str, seq: int, digest: str) -> str:
    """'' when the stored chain ends at the last record the hub accepted (its device row)."""
    rows = db.execute("SELECT audit_seq, audit_hash FROM devices WHERE id=?", (device_id,))
    if not rows or (int(rows[0][0]), str(rows[0][1])) == (seq, digest) or int(rows[0][0]) == 0 and seq == 0:
        return ""
    return f"the stored chain ends at record {seq}, but the hub accepted records up to {rows[0][0]}: records {seq + 1}..{rows[0][0]} were deleted"


def prune_device(db: HubDb, device_id: str, key_hex: str, sign_key: Ed25519PrivateKey, keys: Mapping[str, Ed25519PublicKey],
                 cutoff_us: int) -> int:
    """Prunes the device's oldest records written before `cutoff_us`; how many went."""
    with db.transaction():
        checkpoint = read_checkpoint(db, device_id, keys)  # a forged one is not built upon
        start = checkpoint.seq if checkpoint else 0
        young = db.execute("SELECT min(seq) FROM audit WHERE device=? AND seq>? AND ts_us>=?", (device_id, start, cutoff_us))[0][0]
        end = db.execute("SELECT max(seq) FROM audit WHERE device=? AND seq>?", (device_id, start))[0][0]
        upto = int(young) - 1 if young is not None else int(end or 0)
        if upto <= start:
            return 0
        checked, problem, _ = verify_chain(db, device_id, key_hex, keys, upto)
        if problem or checked != upto - start:
            raise CheckpointError(f"audit prune of {device_id}: the records to prune do not check out ({problem or 'incomplete'}): nothing pruned")
        digest = db.execute("SELECT hash FROM audit WHERE device=? AND seq=?", (device_id, upto))[0][0]
        pruned = (checkpoint.pruned if checkpoint else 0) + checked
        now = int(time.time())
        doc = signing.sign({"v": protocol.VERSION, "type": "hub_audit_checkpoint", "device": device_id, "seq": upto, "hash": digest,
                            "pruned": pruned, "at": now}, CHECKPOINT_DOMAIN, sign_key)
        db.execute("DELETE FROM audit WHERE device=? AND seq<=?", (device_id, upto))
        db.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET seq=excluded.seq,"
                   " hash=excluded.hash, pruned=excluded.pruned, at=excluded.at, doc=excluded.doc",
                   (device_id, upto, digest, pruned, now, json.dumps(doc)))
    return checked


def prune_all(store: Any, sign_key: Ed25519PrivateKey, keys: Mapping[str, Ed25519PublicKey], retention_days: int,
              now_us: int | None = None) -> dict[str, int]:
    """{device: records pruned now} over the fleet; a device whose records do not check out is
    alerted and skipped (its evidence stays). Nothing when `retention_days` is 0."""
    if retention_days <= 0:
        return {}
    cutoff = (time.time_ns() // 1000 if now_us is None else now_us) - retention_days * DAY_US
    out: dict[str, int] = {}
    for device in store.devices():
        try:
            out[device.id] = prune_device(store.db, device.id, device.sign_pub, sign_key, keys, cutoff)
        except CheckpointError as exc:
            _LOG.error("%s", exc)
            store.alert(device.id, str(exc))
    if any(out.values()):
        store.db.checkpoint()  # secure_delete zeroed the cells; the WAL's old page images go now
        _LOG.info("hub audit: pruned %s", ", ".join(f"{d} {n}" for d, n in out.items() if n))
    return out


def pruned_counts(db: HubDb) -> dict[str, int]:
    """{device: records pruned so far} (unverified: for status and metrics)."""
    ensure_schema(db)
    return {r[0]: int(r[1]) for r in db.execute("SELECT device, pruned FROM audit_checkpoints ORDER BY device")}
