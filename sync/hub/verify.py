"""Re-checking a device's stored audit chain from record 1 (`admin audit verify`, the console)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.audit.records import GENESIS, check_record


def verify_device_chain(store, device_id: str, key_hex: str) -> tuple[int, str]:
    """(records checked, '' or the first failure): the stored chain from record 1, in pages."""
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
    prev, seq, checked = GENESIS, 0, 0
    while True:
        page = store.audit_chain(device_id, seq)
        if not page:
            return checked, ""
        for r in page:
            if r.seq != seq + 1:
                return checked, f"record {seq + 1} is missing (next stored is {r.seq})"
            problem = check_record(r, key, prev)
            if problem:
                return checked, problem
            prev, seq, checked = r.hash, r.seq, checked + 1
