"""The hub's anchor of this device's audit chain: `<data_dir>/audit_anchor.json`.

Every audit ack the hub sends is signed and names (seq, hash) of the last record it holds for the
device (sync.control checks it). The device keeps the newest one here, the hub's whole signed ack
included, so `facegate audit verify` can check it again later: a journal that ends below the
anchor, or whose record at the anchor seq has another hash, lost records the hub had already
received (its tail was deleted). The chain alone cannot show that: the records left still link.

The anchor only moves forward (an older ack never replaces a newer one) and is written atomically
(temporary sibling, fsync, rename, directory fsync), mode 0600. Deleting the file deletes the
evidence on the device, not at the hub, which holds the records themselves (`facegate hub audit`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.atomic_file import write_atomic
from edge.errors import AuditError

ANCHOR_FILE = "audit_anchor.json"


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    seq: int
    hash: str
    ack: dict[str, Any]  # the hub's signed ack it came from (domain facegate/v1/ack, sync.control)

    @classmethod
    def of_ack(cls, ack: dict[str, Any]) -> AuditAnchor:
        anchor = ack.get("anchor")
        if not isinstance(anchor, dict) or not isinstance(anchor.get("seq"), int) or not isinstance(anchor.get("hash"), str):
            raise AuditError("audit anchor: the ack carries no anchor {seq, hash}")
        return cls(anchor["seq"], anchor["hash"], dict(ack))


def read_anchor(data_dir: Path) -> AuditAnchor | None:
    """The stored anchor, None when the hub never anchored this journal; AuditError if unreadable."""
    path = Path(data_dir) / ANCHOR_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the hub's audit anchor ({exc.strerror or exc})") from exc
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("ack"), dict):
            raise ValueError("not a v1 anchor file")
        return AuditAnchor.of_ack(doc["ack"])
    except (ValueError, AuditError) as exc:
        raise AuditError(f"{path}: not a readable audit anchor ({exc}); it was damaged or altered") from exc


def write_anchor(data_dir: Path, anchor: AuditAnchor) -> bool:
    """Stores `anchor` unless the stored one is as far or further; True when written."""
    current = read_anchor(data_dir)
    if current is not None and current.seq >= anchor.seq:
        return False
    path = Path(data_dir) / ANCHOR_FILE
    data = (json.dumps({"v": 1, "ack": anchor.ack}, sort_keys=True) + "\n").encode()
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise AuditError(f"{path}: cannot write the hub's audit anchor ({exc.strerror or exc})") from exc
    return True
