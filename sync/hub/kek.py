"""`facegate hub rotate-kek`: every key the hub's KEK wraps, re-wrapped under a new KEK at once.

What the KEK protects (`sync.hub.store`, `sync.hub.review`): each person's key (wrapped with
AAD "hub-person-key"/uid), each held review item's key ("hub-review-key"/id), and the keyed name
tags (HMAC under a key derived from the KEK, so they are recomputed from each person's sealed
name). Sealed rows themselves do not change: their keys do not.

The steps, each durable before the next, so a crash anywhere leaves a hub that one more
`rotate-kek` finishes (`finish_interrupted`):
1. the new KEK is written to `hub.key.new` (0600), and `hub.key.old` is a hard link to the key
   file in use;
2. ONE database transaction re-wraps every key and tag and records the new KEK's id
   (`hub_meta.kek_id`, which `HubStore` checks at every open);
3. `hub.key.new` is renamed over the key file (atomic), then `hub.key.old` is deleted.
Crash before 2 commits: the database is under the old KEK, the key file too; the leftovers are
dropped. Crash after 2: the database names the new KEK, so `hub.key.new` is moved into place.
The old wrapped keys are overwritten (`secure_delete`) and the WAL is checkpointed, so nothing
under the old KEK stays in the SQLite files; a backup taken before still opens only with the old
KEK: destroy old KEK copies as your backup retention allows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import FacegateError
from edge.gallery.crypto import aad, fsync_dir, generate_kek_file, kek_id, read_kek_file, unwrap_key, wrap_key
from sync.hub.db import HubDb
from sync.hub.review import ReviewQueue
from sync.hub.store import HubStore


class KekRotationError(FacegateError):
    """The KEK cannot be rotated here (read-only key file, leftovers that match nothing)."""


@dataclass(frozen=True, slots=True)
class KekRotation:
    old_id: str
    new_id: str
    persons: int
    reviews: int


def _side(key_path: Path, suffix: str) -> Path:
    return key_path.with_name(key_path.name + suffix)


def finish_interrupted(key_path: Path, db: HubDb) -> str:
    """Settles the leftovers of an interrupted rotation against the database's recorded KEK id;
    returns what was done ("" when there was nothing to do)."""
    new, old = _side(key_path, ".new"), _side(key_path, ".old")
    if not new.exists() and not old.exists():
        return ""
    rows = db.execute("SELECT value FROM hub_meta WHERE key='kek_id'") if _has_meta(db) else []
    recorded = rows[0][0] if rows else None
    if new.exists() and recorded == kek_id(read_kek_file(new)):
        os.replace(new, key_path)  # step 2 had committed: the new KEK is the database's
        fsync_dir(key_path.parent)
        old.unlink(missing_ok=True)
        return "finished: the new KEK had sealed the database, it is now the key file"
    if recorded is not None and key_path.exists() and recorded != kek_id(read_kek_file(key_path)):
        raise KekRotationError(f"{key_path}: neither it nor {new.name} holds KEK {recorded}, which seals the hub database; restore the key file from a backup")
    new.unlink(missing_ok=True)  # never used: step 2 had not committed
    old.unlink(missing_ok=True)
    fsync_dir(key_path.parent)
    return "rolled back: the old KEK still seals the database; leftovers removed"


def _has_meta(db: HubDb) -> bool:
    if db.kind == "postgresql":
        return bool(db.execute("SELECT 1 FROM information_schema.tables WHERE table_name='hub_meta'"))
    return bool(db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='hub_meta'"))


def rotate_kek(store: HubStore, key_path: Path) -> KekRotation:
    """Steps 1-3 above; `store` is open with the KEK in `key_path` and uses the new one afterwards."""
    old_kek = read_kek_file(key_path)
    new_path, old_path = _side(key_path, ".new"), _side(key_path, ".old")
    if new_path.exists() or old_path.exists():
        raise KekRotationError(f"{new_path.name} / {old_path.name}: an interrupted rotation; finish_interrupted first")
    new_kek = generate_kek_file(new_path)
    try:
        os.link(key_path, old_path)
    except OSError as exc:
        new_path.unlink(missing_ok=True)
        raise KekRotationError(f"{key_path}: cannot keep the old KEK beside it ({exc.strerror or exc}); a KEK from a systemd credential "
                               "is rotated by replacing the credential, not here") from exc
    ReviewQueue(store)  # its table exists from here on, even on a hub that never held an upload
    db = store.db
    try:
        with db.transaction():
            persons = db.execute("SELECT uid, wrapped_key, sealed FROM persons WHERE wrapped_key IS NOT NULL")
            opened = [(uid, unwrap_key(store._kek, w, aad("hub-person-key", uid), f"hub person {uid} key"),
                       store._open_person(uid, w, s).profile.name) for uid, w, s in persons]
            reviews = db.execute("SELECT id, wrapped_key FROM reviews WHERE wrapped_key IS NOT NULL")
            review_keys = [(i, unwrap_key(store._kek, w, aad("hub-review-key", str(i)), f"hub review {i} key")) for i, w in reviews]
            store.use_kek(new_kek)
            for uid, key, name in opened:
                db.execute("UPDATE persons SET wrapped_key=?, name_tag=? WHERE uid=?", (wrap_key(store._kek, key, aad("hub-person-key", uid)), store._tag(name), uid))
            for i, key in review_keys:
                db.execute("UPDATE reviews SET wrapped_key=? WHERE id=?", (wrap_key(store._kek, key, aad("hub-review-key", str(i))), i))
            db.execute("UPDATE hub_meta SET value=? WHERE key='kek_id'", (kek_id(new_kek),))
    except BaseException:
        store.use_kek(old_kek)
        new_path.unlink(missing_ok=True)
        old_path.unlink(missing_ok=True)
        raise
    os.replace(new_path, key_path)
    fsync_dir(key_path.parent)
    old_path.unlink()
    fsync_dir(key_path.parent)
    db.checkpoint()  # the keys wrapped under the old KEK leave the WAL too
    return KekRotation(kek_id(old_kek), kek_id(new_kek), len(opened), len(review_keys))
