"""The device's half of a gallery bundle: a verified bundle (`sync.bundle.open_bundle`) applied.

The sequence is checked against the scope's last applied one and the device's clock
(`sync.bundle.check_sequence`: replays, downgrades, sequences too far ahead and gaps refused),
then `edge.gallery.sync_apply.apply_sync_change` applies the whole bundle in one store
transaction (upserts of uids erased here before are dropped and reported). The hub never imports
this module.
"""

from __future__ import annotations

from edge.gallery.changes import SyncChange
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import Applied, apply_sync_change
from sync.bundle import MAX_AHEAD_S, BundleContent, check_sequence


def apply_bundle(store: GalleryStore, content: BundleContent, max_ahead_s: float = MAX_AHEAD_S) -> Applied:
    """Sequence check, then the whole bundle in one store transaction; the new gallery version
    and the upserts dropped because their uid was erased here."""
    current = store.sync_state().scopes.get(content.scope, 0)
    check_sequence(content, current, max_ahead_s)
    change = SyncChange(content.scope, content.seq, current, content.kind == "full", content.upserts, content.removes, content.erases)
    return apply_sync_change(store, change)
