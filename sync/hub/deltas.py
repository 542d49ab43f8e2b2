"""Full or incremental: what the next bundle of a scope holds.

A delta (an `incremental` bundle, `base_seq` = the scope's newest bundle) holds only the persons
changed since that bundle's person version (`sync.hub.versions`): upserts of the scope's changed
live persons, removes of the others, and — as in every bundle — the erases still owed to any of
its recipients. Full bundles are built:
- when asked (`full=True`: a device's resync request, `admin push --full`);
- before the scope's first bundle, or after one built before versions existed;
- when a recipient has never applied a bundle of this scope (a new device or a device new to
  the group: it has nothing to build on);
- when the delta would hold as many persons as the full bundle.
A device that is not at `base_seq` refuses the delta (a sequence gap) and asks for a resync,
which is answered with a full bundle: a lost delta heals like a lost full bundle did.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.gallery.changes import SyncPerson
from sync.hub import versions
from sync.hub.store import HubStore


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str  # "full" or "incremental"
    base_seq: int | None
    base_epoch: int | None  # the group key epoch of the base bundle (a delta of a new epoch carries its wraps)
    upserts: tuple[SyncPerson, ...]
    removes: tuple[str, ...]
    version: int  # the person version the bundle holds everything up to


def plan(store: HubStore, scope: str, groups: tuple[str, ...], recipients: list[str], full: bool = False) -> Plan:
    last = None if full else store.last_bundle(scope)
    if last is not None and last[1] is not None and set(recipients) <= store.acked_devices(scope):
        base_seq, base_version, base_epoch = last
        delta = versions.since(store.db, int(base_version), groups)
        if len(delta.upserts) + len(delta.removes) < versions.live_count(store.db, groups):
            return Plan("incremental", base_seq, base_epoch, tuple(store.persons_by_uid(delta.upserts)), delta.removes, delta.version)
    version = versions.current(store.db)  # read before the persons: a change meanwhile is sent again, never missed
    return Plan("full", None, None, tuple(store.persons(groups)), (), version)
