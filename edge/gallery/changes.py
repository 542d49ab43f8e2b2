"""The values a hub sync carries into the gallery: a person as the hub holds it, and one change.

Shared by the hub (which builds them; `sync.hub.store`), the bundle wire format (`sync.bundle`)
and the device, which applies a change in one store transaction (`edge.gallery.sync_apply`).
Plain values only: nothing here opens a gallery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.gallery.records import PersonProfile


@dataclass(frozen=True, slots=True, eq=False)
class SyncPerson:
    uid: str  # the hub's person uid (32 hex characters)
    profile: PersonProfile
    model: str
    embeddings: tuple[np.ndarray, ...]
    qualities: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SyncChange:
    scope: str
    seq: int
    expect_seq: int  # the scope's sequence the bundle was checked against; another one means a race
    full: bool
    upserts: tuple[SyncPerson, ...] = ()
    removes: tuple[str, ...] = ()  # uids leaving this scope
    erases: tuple[str, ...] = ()  # uids erased everywhere
