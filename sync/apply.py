"""The device's half of a gallery bundle: a verified bundle (`sync.bundle.open_bundle`) applied.

The sequence is checked against the scope's last applied one (`sync.bundle.check_sequence`:
replays, downgrades and gaps refused), then `edge.gallery.sync_apply.apply_change` applies the
whole bundle in one store transaction. The hub never imports this module.
"""

from __future__ import annotations

from edge.gallery.changes import SyncChange
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import apply_change
from sync.bundle import BundleContent, check_sequence


def apply_bundle(store: GalleryStore, content: BundleContent) -> int:
    """Sequence check, then the whole bundle in one store transaction; the new gallery version."""
    current = store.sync_state().scopes.get(content.scope, 0)
    check_sequence(content, current)
    change = SyncChange(content.scope, content.seq, current, content.kind == "full", content.upserts, content.removes, content.erases)
    return apply_change(store, change)
