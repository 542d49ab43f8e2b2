"""One "not this person" code path for `facegate gallery reject-match` and the hub's signed
reports (sync.reports): the kept probe of a decision becomes a negative of its person."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.gallery import negatives
from edge.gallery.negatives import Rejected, RejectError

if TYPE_CHECKING:
    from edge.gallery.store import GalleryStore


def reject_match(store: GalleryStore, event_id: str, keep_h: float, keep_max: int,
                 find_decision: Callable[[str], dict[str, Any] | None]) -> Rejected:
    """The negative made of `event_id`'s kept probe; RejectError (with its stable code) when there
    is none to make. `find_decision(event_id)` is the audited decision body (None: not audited),
    read only to say why no probe is kept."""
    event_id = negatives.check_event_id(event_id)
    if keep_h <= 0:
        raise RejectError(
            "probes_off", "keeping probes is off ([match] keep_probes_h = 0), so no decision's probe can be rejected; "
            "set keep_probes_h (e.g. 24) and restart the daemon to report wrong matches from then on",
        )
    negatives.prune_probes(store, keep_h * 3600.0, keep_max)
    done = negatives.reject(store, event_id)
    if done is None:
        raise negatives.missing_probe(store, event_id, find_decision(event_id), keep_h)
    return done
