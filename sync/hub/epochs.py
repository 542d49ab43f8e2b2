"""Group keys on the hub: one random AES-256 key per scope and epoch, wrapped to each member.

A bundle's content is sealed once under the scope's current group key (`sync.bundle.GroupKey`),
whatever the number of devices; the key travels wrapped to each device's X25519 key (the same
wrapping as `sync.sealing`) in full bundles and in the first delta of an epoch only, so a
one-person change costs each device that person's bytes plus a header, not a wrap per device.

A new epoch (a new random key) starts whenever the scope's recipients change — a device leaves
the group, joins it, or is re-keyed (its X25519 public key is part of the recorded membership) —
so a device removed from a group cannot open any later bundle of it, and a device that joins
cannot open bundles captured before it joined. A person's erasure starts a new epoch too: the
hub then no longer holds a key that opens captured bundles that carried the person (devices keep
only wraps that need their own private key, as before group keys). The key is stored wrapped by
the hub's KEK (`group_epochs`); one that no longer unwraps (the KEK was rotated) just starts a
new epoch.
"""

from __future__ import annotations

import json
import os
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.identity import raw_public
from sync import sealing
from sync.bundle import GroupKey, epoch_aad
from sync.hub.db import HubDb
from sync.hub.store import HubStore

_NONCE = 12


def _aad(scope: str, epoch: int) -> bytes:
    return b"facegate-hub-group-key|" + epoch_aad(scope, epoch)


def _erased_since(db: HubDb, epoch: int) -> bool:
    """A person erased since the epoch began (to the second, so erring towards a new epoch): the
    key that could open the bundles that carried them must not stay on the hub."""
    rows = db.execute("SELECT max(requested) FROM erasures")
    return bool(rows and rows[0][0] is not None and (int(rows[0][0]) + 1) * 1_000_000 > epoch)


def group_key(store: HubStore, scope: str, recipients: dict[str, X25519PublicKey]) -> GroupKey:
    """The scope's current group key, a new epoch if the recipients are not the epoch's."""
    db: HubDb = store.db
    members = json.dumps({d: raw_public(k).hex() for d, k in sorted(recipients.items())}, sort_keys=True)
    with db.transaction():
        rows = db.execute("SELECT epoch, key_wrapped, members_json, eph, wraps_json FROM group_epochs WHERE scope=?" + db.for_update(), (scope,))
        if rows and rows[0][2] == members and not _erased_since(db, int(rows[0][0])):
            epoch, blob = int(rows[0][0]), bytes(rows[0][1])
            try:
                key = store._kek.decrypt(blob[:_NONCE], blob[_NONCE:], _aad(scope, epoch))
                return GroupKey(epoch, key, rows[0][3], json.loads(rows[0][4]))
            except InvalidTag:  # wrapped under a KEK since rotated: a new epoch below
                pass
        epoch = max(time.time_ns() // 1000, int(rows[0][0]) + 1 if rows else 1)
        key = os.urandom(32)
        eph, wraps = sealing.wrap_key(key, recipients, epoch_aad(scope, epoch))
        nonce = os.urandom(_NONCE)
        wrapped = nonce + store._kek.encrypt(nonce, key, _aad(scope, epoch))
        db.execute("INSERT INTO group_epochs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET epoch=excluded.epoch,"
                   " key_wrapped=excluded.key_wrapped, members_json=excluded.members_json, eph=excluded.eph, wraps_json=excluded.wraps_json",
                   (scope, epoch, wrapped, members, eph, json.dumps(wraps)))
    return GroupKey(epoch, key, eph, wraps)
