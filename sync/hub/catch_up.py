"""Catch-ups: a group's full bundle for one member, on that member's own gallery topic.

A device that cannot build on its group's newest bundle (a delta lost, a key file lost, a device
new to the group) needs the whole gallery; everyone else does not. Sent on the group topic, one
member's full bundle would reach every member (50,000 persons is ~200 MB each, so one flaky door
of a thousand would move 200 GB) and, with a new sequence, make every other member fetch it too.
A catch-up instead:
- carries the group's current persons and the erases owed to that device, sealed under the
  group's current key (the epoch every member is at or derives), with that key wrapped to this
  device only;
- names the device in its signed header (`to`), so the device refuses it anywhere but on its
  own topic (`sync.bundle.open_bundle`), and another device cannot be handed it;
- has the sequence of the group's newest bundle, not a new one, and is not recorded as a bundle
  of the scope: the device lands where every member is, and the group's next delta, built on
  that sequence, applies on it as on the others. (Persons changed after the newest bundle may be
  in it already; the next delta sends them again, which an upsert or remove takes as it is.)
Its ack confirms what the newest bundle's ack confirms (`HubStore.record_gallery_ack`); an erase
made after that bundle is confirmed by the next one, which carries it again.
"""

from __future__ import annotations

import dataclasses
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from sync.bundle import BundleContent, build_bundle
from sync.hub import epochs
from sync.hub.store import HubStore


@dataclasses.dataclass(frozen=True, slots=True)
class CatchUp:
    payload: bytes
    seq: int  # the group's newest bundle's
    persons: int


def possible(store: HubStore, scope: str) -> bool:
    """Whether the scope's members can build on its newest bundle (one sealed under a group key
    and holding a person version): else the answer is a full bundle to the group, as before."""
    last = store.last_bundle(scope)
    return last is not None and last[1] is not None and last[2] is not None


def build(store: HubStore, signing_key: Ed25519PrivateKey, device: str, group: str, members: dict[str, X25519PublicKey]) -> CatchUp:
    """The catch-up of `group` for `device` (one of `members`, every device of the group: the
    key's epoch follows the whole membership, as the group's own bundles do)."""
    scope = f"group:{group}"
    last = store.last_bundle(scope)
    if last is None or device not in members:
        raise ValueError(f"no catch-up of {scope} for {device}")
    key = epochs.group_key(store, scope, members)
    key = dataclasses.replace(key, wraps={device: key.wraps[device]})
    persons = tuple(store.persons((group,)))
    content = BundleContent(scope, "full", int(last[0]), None, int(time.time()), persons, (), tuple(store.pending_erases([device])))
    return CatchUp(build_bundle(content, signing_key, {device: members[device]}, key, to=device), int(last[0]), len(persons))
