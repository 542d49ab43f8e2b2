"""A prune's checkpoint record: what `verify()` starts from once the oldest records are gone.

A prune (edge.audit.retention) deletes records 1..P (or the ones after the previous prune) and, in
the same transaction, appends a `checkpoint` record: device-signed and chained like every
record, its body names P (`pruned_upto`), the hash of record P (`pruned_hash`: the `prev` the
first remaining record must carry), how many records went, and the hub's signed ack (`anchor`)
whose (seq, hash) is at or above P — the hub's word that it holds every pruned record. The
journal's `verify()` reads the newest checkpoint and walks from P + 1; `facegate audit verify`
also checks the ack's hub signature. docs/audit.md#retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.audit.records import CHECKPOINT, AuditRecord
from edge.errors import AuditError

_HEX = frozenset("0123456789abcdef")


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int  # the checkpoint record's own seq (always above pruned_upto)
    pruned_upto: int
    pruned_hash: str
    pruned: int
    ack: dict[str, Any]  # the hub's signed ack that allowed the prune (sync.control checked it then)
    anchor_seq: int
    anchor_hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> Checkpoint:
        """The checkpoint in `record`; AuditError naming what is wrong with it (a forged or damaged one)."""
        body, where = record.body, f"record {record.seq}: checkpoint"
        if record.kind != CHECKPOINT:
            raise AuditError(f"{where}: not a checkpoint record ({record.kind})")
        upto, digest, pruned, ack = body.get("pruned_upto"), body.get("pruned_hash"), body.get("pruned"), body.get("anchor")
        if not isinstance(upto, int) or isinstance(upto, bool) or not 0 < upto < record.seq or not _is_hash(digest):
            raise AuditError(f"{where}: pruned_upto must be a seq below the checkpoint's own and pruned_hash a record hash: forged or altered")
        if not isinstance(pruned, int) or isinstance(pruned, bool) or not 0 < pruned <= upto:
            raise AuditError(f"{where}: pruned must count 1..{upto} records: forged or altered")
        anchor = ack.get("anchor") if isinstance(ack, dict) else None
        if not isinstance(anchor, dict) or not isinstance(anchor.get("seq"), int) or not _is_hash(anchor.get("hash")):
            raise AuditError(f"{where}: carries no hub ack with an anchor (seq, hash): records were pruned without the hub's word")
        if anchor["seq"] < upto or (anchor["seq"] == upto and anchor["hash"] != digest):
            raise AuditError(f"{where}: prunes up to record {upto}, but the hub's ack anchors record {anchor['seq']} "
                             f"({anchor['hash'][:16]}…): records the hub did not acknowledge were pruned")
        return cls(record.seq, upto, digest, pruned, dict(ack), anchor["seq"], anchor["hash"])

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "pruned_upto": self.pruned_upto, "pruned_hash": self.pruned_hash, "pruned": self.pruned,
                "anchor_seq": self.anchor_seq}


def checkpoint_body(upto: int, digest: str, pruned: int, ack: dict[str, Any]) -> dict[str, Any]:
    return {"pruned_upto": upto, "pruned_hash": digest, "pruned": pruned, "anchor": ack}
