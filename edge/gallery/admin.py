"""The gallery's maintenance operations: device-key and key-encryption-key rotation, and the
integrity check: `rotate_device_key(store)`, `rotate_kek(store, new)`, `forget_kek(store, id)`,
`integrity_check(store)`. Kept apart from `edge.gallery.store` so that the store reads as the daily
operations; like `edge.gallery.sync_apply`, they work inside the store's transactions and with
its keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import CryptoError, GalleryError, KeyfileError
from edge.gallery import crypto, records
from edge.gallery import snapshot as index_snapshot
from edge.gallery.crypto import KEY_BYTES, SEAL_OVERHEAD
from edge.gallery.db import now
from edge.gallery.store import GalleryStore


def rotate_device_key(store: GalleryStore) -> None:
    """New DK: every person key re-wrapped and every name tag recomputed in ONE transaction."""
    with store._transaction(write=True) as db:
        unknown = [r[0] for r in db.execute("SELECT kek_id FROM device_keys") if r[0] not in store._keks]
        if unknown:
            raise GalleryError(
                f"{store.path}: a key-encryption-key rotation is under way (kek id {', '.join(unknown)} is not known to this "
                f"process); finish it with forget_kek, then rotate the device key"
            )
        dk, version, at = crypto.new_key(), store._dk_version + 1, now()
        tag_key = crypto.derive_key(dk, records.NAME_TAG_PURPOSE)
        for person_id, uid, wrapped, sealed in db.execute("SELECT id, uid, wrapped_key, sealed_profile FROM persons").fetchall():
            pk = store._person_key(person_id, uid, wrapped)
            name = records.normalise_name(store._profile(person_id, uid, AESGCM(pk), sealed).name)
            db.execute(
                "UPDATE persons SET wrapped_key=?, name_tag=? WHERE id=?",
                (crypto.wrap_key(dk, pk, records.person_key_aad(uid)), crypto.keyed_tag(tag_key, name), person_id),
            )
        db.execute("DELETE FROM device_keys")
        index_snapshot.drop_keys(db)  # wrapped by the old DK: the next open takes a new snapshot
        for kid, kek in store._keks.items():
            db.execute("INSERT INTO device_keys VALUES (?, ?, ?, ?)", (kid, version, crypto.wrap_key(kek, dk, records.device_key_aad(kid, version)), at))
    store._set_device_key(dk, version, store._kek_id)
    store._checkpoint()  # the old wraps must not linger in the WAL


def rotate_kek(store: GalleryStore, new_kek: bytes) -> str:
    """Step 1 of a KEK rotation: the new KEK opens the gallery too. Returns the kek id in use.

    Step 2 (caller): swap the key file atomically. Step 3: `forget_kek(returned id)`. A crash
    between the steps leaves a gallery that both the old and the new key file open.
    """
    if not isinstance(new_kek, bytes) or len(new_kek) != KEY_BYTES:
        raise KeyfileError(f"new key-encryption key must be {KEY_BYTES} bytes")
    new_id = crypto.kek_id(new_kek)
    if new_id in store._keks:
        raise GalleryError(f"rotate_kek: kek id {new_id} already opens this gallery; generate a new key file")
    with store._transaction(write=True) as db:
        wrapped = crypto.wrap_key(new_kek, store._dk, records.device_key_aad(new_id, store._dk_version))
        db.execute("INSERT OR REPLACE INTO device_keys VALUES (?, ?, ?, ?)", (new_id, store._dk_version, wrapped, now()))
    store._keks[new_id] = new_kek
    return store._kek_id


def forget_kek(store: GalleryStore, old_kek_id: str) -> None:
    """Step 3 of a KEK rotation: the key with this id no longer opens the gallery."""
    with store._transaction(write=True) as db:
        ids = [r[0] for r in db.execute("SELECT kek_id FROM device_keys")]
        if old_kek_id not in ids:
            raise GalleryError(f"forget_kek: no key with kek id {old_kek_id}; this gallery's keys: {', '.join(ids)}")
        if len(ids) == 1:
            raise GalleryError(f"forget_kek: kek id {old_kek_id} is the gallery's only key; add the new one with rotate_kek first")
        db.execute("DELETE FROM device_keys WHERE kek_id=?", (old_kek_id,))
    store._keks.pop(old_kek_id, None)
    if store._kek_id == old_kek_id:
        store._kek_id = next((k for k in ids if k in store._keks), "")
    store._checkpoint()


def integrity_check(store: GalleryStore) -> list[str]:
    """Every problem found, [] when consistent: SQLite's own checks, then the gallery's
    invariants (each person has a template, each key and record authenticates in its place,
    name tags match the sealed names and are unique, one dimension per model)."""
    with store._transaction(write=False) as db:
        problems = [f"sqlite: {r[0]}" for r in db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"sqlite: {r[0]} row {r[1]} refers to a missing {r[2]} row" for r in db.execute("PRAGMA foreign_key_check")]
        problems += [f"name tag shared by {r[0]} persons" for r in db.execute("SELECT count(*) FROM persons GROUP BY name_tag HAVING count(*) > 1")]
        versions = {r[0] for r in db.execute("SELECT dk_version FROM device_keys")}
        if versions != {store._dk_version}:
            problems.append(f"device key wraps disagree on the key version: {sorted(versions)}")
        keys: dict[int, tuple[bytes, str]] = {}
        for person_id, uid, wrapped, sealed, tag, n in db.execute(
            "SELECT p.id, p.uid, p.wrapped_key, p.sealed_profile, p.name_tag,"
            " (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM persons p"
        ).fetchall():
            try:
                pk = store._person_key(person_id, uid, wrapped)
                profile = store._profile(person_id, uid, AESGCM(pk), sealed)
            except GalleryError as exc:
                problems.append(str(exc))
                continue
            keys[person_id] = (pk, uid)
            if tag != store._name_tag(profile.name):
                problems.append(f"person {person_id}: name tag does not match the sealed name")
            if n == 0:
                problems.append(f"person {person_id}: has no templates")
        dims: dict[str, set[int]] = {}
        for template_id, person_id, uid, model, sealed in db.execute("SELECT id, person_id, uid, model, sealed FROM templates ORDER BY person_id"):
            dims.setdefault(model, set()).add(records.template_dim(len(sealed), SEAL_OVERHEAD))
            if person_id not in keys:
                continue  # the person's own problem is listed already
            pk, person_uid = keys[person_id]
            try:
                crypto.unseal(AESGCM(pk), sealed, records.template_aad_head(model, person_uid) + uid.encode(), f"template {template_id} (person {person_id})")
            except CryptoError as exc:
                problems.append(str(exc))
        problems += [f"model {m}: templates of several dimensions {sorted(d)}" for m, d in dims.items() if len(d) > 1]
    return problems
