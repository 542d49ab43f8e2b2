"""Re-checking a device's stored audit chain (`admin audit verify`, the console)."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.hub.audit_prune import verify_chain


def verify_device_chain(store, device_id: str, key_hex: str, hub_keys: Mapping[str, Ed25519PublicKey] | None = None) -> tuple[int, str]:
    """(records checked, '' or the first failure): the stored chain from record 1, or from the
    device's checkpoint when `[hub] audit_retention_days` pruned it (which must verify with one of
    `hub_keys`, the hub's own signing keys), in pages, up to the last record the hub accepted."""
    checked, problem, _checkpoint = verify_chain(store.db, device_id, key_hex, hub_keys or {})
    return checked, problem
