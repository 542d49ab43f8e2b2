"""Group keys on the hub: one AES-256 key per scope and epoch, wrapped to each member.

A bundle's content is sealed once under the scope's current group key (`sync.bundle.GroupKey`),
whatever the number of devices; the key travels wrapped to each device's X25519 key (the same
wrapping as `sync.sealing`) in full bundles and in the first delta of a fresh epoch only, so a
one-person change costs each device that person's bytes plus a header, not a wrap per device.

A fresh epoch (a new random key, wrapped to every member) starts whenever the scope's recipients
change — a device leaves the group, joins it, or is re-keyed (its X25519 public key is part of
the recorded membership) — so a device removed from a group cannot open any later bundle of it,
and a device that joins cannot open bundles captured before it joined. A person's erasure
(any row added to `erasures` since the epoch began: `erased_mark`) advances the epoch by the
one-way ratchet instead (`sync.ratchet`: key_{n+1} = HKDF(key_n), epoch n+1, no wraps in the
delta; every member derives it): the hub then no longer holds a key that opens captured bundles
that carried the person, and cannot derive one back. A chain longer than `ratchet.MAX_STEPS`,
or a key that no longer unwraps (the KEK was rotated), starts a fresh epoch. The key is stored
wrapped by the hub's KEK (`group_epochs`); the old one is overwritten in the same row. Its wraps
for full bundles are made again at each step (to the members' keys, for the new epoch).
"""

from __future__ import annotations

import json
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.identity import raw_public
from sync import ratchet, sealing
from sync.bundle import GroupKey, epoch_aad
from sync.hub.db import HubDb
from sync.hub.store import HubStore

_NONCE = 12


def _aad(scope: str, epoch: int) -> bytes:
    return b"facegate-hub-group-key|" + epoch_aad(scope, epoch)


def _erased_mark(db: HubDb) -> int:
    """How many erasure rows exist (never deleted: each erasure of a person adds one per device).
    Read inside the epoch's transaction; one committed just after is seen by the next bundle."""
    rows = db.execute("SELECT count(*) FROM erasures")
    return int(rows[0][0]) if rows else 0


def _store(store: HubStore, scope: str, key: GroupKey, members: str, mark: int) -> None:
    nonce = os.urandom(_NONCE)
    wrapped = nonce + store._kek.encrypt(nonce, key.key, _aad(scope, key.epoch))
    store.db.execute("INSERT INTO group_epochs (scope, epoch, key_wrapped, members_json, eph, wraps_json, ratchet_base, erased_mark)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET epoch=excluded.epoch, key_wrapped=excluded.key_wrapped,"
                     " members_json=excluded.members_json, eph=excluded.eph, wraps_json=excluded.wraps_json, ratchet_base=excluded.ratchet_base,"
                     " erased_mark=excluded.erased_mark", (scope, key.epoch, wrapped, members, key.eph, json.dumps(key.wraps), key.ratchet_base, mark))


def group_key(store: HubStore, scope: str, recipients: dict[str, X25519PublicKey]) -> GroupKey:
    """The scope's current group key: the epoch's, its ratchet step after an erasure, or a fresh
    epoch if the recipients are not the epoch's."""
    db: HubDb = store.db
    members = json.dumps({d: raw_public(k).hex() for d, k in sorted(recipients.items())}, sort_keys=True)
    with db.transaction():
        rows = db.execute("SELECT epoch, key_wrapped, members_json, eph, wraps_json, ratchet_base, erased_mark FROM group_epochs WHERE scope=?"
                          + db.for_update(), (scope,))
        mark = _erased_mark(db)
        current = _current(store, scope, rows[0]) if rows and rows[0][2] == members else None
        if current is not None and rows[0][6] is not None and int(rows[0][6]) == mark:
            return current
        if current is not None and rows[0][6] is not None and current.epoch + 1 - (current.ratchet_base or current.epoch) <= ratchet.MAX_STEPS:
            epoch, base = current.epoch + 1, current.ratchet_base or current.epoch
            key = ratchet.step(current.key, scope, epoch)
        else:
            epoch, base = max(time.time_ns() // 1000, int(rows[0][0]) + 1 if rows else 1), None
            key = os.urandom(32)
        eph, wraps = sealing.wrap_key(key, recipients, epoch_aad(scope, epoch))  # for full bundles (and a fresh epoch's first delta)
        new = GroupKey(epoch, key, eph, wraps, base)
        _store(store, scope, new, members, mark)
    return new


def _current(store: HubStore, scope: str, row: tuple[object, ...]) -> GroupKey | None:
    """The stored epoch's key; None if it no longer unwraps (wrapped under a KEK since rotated)."""
    epoch, blob = int(row[0]), bytes(row[1])  # type: ignore[call-overload, arg-type]
    try:
        key = store._kek.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(scope, epoch))
    except InvalidTag:
        return None
    return GroupKey(epoch, key, str(row[3]), json.loads(str(row[4])), None if row[5] is None else int(row[5]))  # type: ignore[call-overload]
