"""The gallery side of hub sync: a verified bundle applied inside ONE store transaction.

`apply_change(store, change)` runs `apply()` in the store's write transaction, so persons,
templates, the scope's sequence and the gallery version all commit together or not at all: a
crash leaves the gallery at the old or the new version, never between. The change itself is a
plain value (`edge.gallery.changes`), which the hub builds too.

Hub persons keep the hub's uid as their row uid. Two small tables (no personal data: random
uids, scope names, integers; `edge.gallery.db.SYNC_TABLES`) remember which scope (`device:<id>` /
`group:<g>`) brought whom and the last sequence applied per scope; `meta.gallery_version` counts
applied bundles.

Resolution rules (docs/sync.md):
- a hub person whose name matches a person enrolled on this device under another uid replaces
  that local person: the hub is the source of truth, and it already holds (or will hold, once the
  outbox delivers it) what this device enrolled;
- an erase removes the person from every scope and crypto-erases it, whatever else the device did
  with that person meanwhile: erasure wins over any update;
- a person dropped from one scope stays while another scope still lists them;
- a full bundle replaces the scope's membership; persons enrolled on the device are not touched;
- an erased uid is remembered for good (`sync_erased`, a tombstone: a random uid and a time, no
  personal data), so a bundle built before the erase and delivered after it (another scope's, or
  one an attacker held back) cannot bring the person back: its upsert of that uid is dropped and
  counted (`Applied.dropped_erased`, in the `gallery_update` audit record).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge.errors import GalleryError
from edge.gallery import crypto, records
from edge.gallery import snapshot as index_snapshot
from edge.gallery.changes import SyncChange, SyncPerson
from edge.gallery.crypto import SEAL_OVERHEAD
from edge.gallery.db import ensure_sync_tables, now, sync_state
from edge.gallery.store import GalleryStore

TOMBSTONES = "CREATE TABLE IF NOT EXISTS sync_erased (uid TEXT PRIMARY KEY, erased INTEGER NOT NULL)"


@dataclass(frozen=True, slots=True)
class Applied:
    version: int  # the gallery version after the change
    dropped_erased: tuple[str, ...] = ()  # upserts refused: those uids were erased here before


def apply_change(store: GalleryStore, change: SyncChange) -> int:
    """A hub bundle, all of it in ONE transaction or nothing; returns the new gallery version."""
    return apply_sync_change(store, change).version


def apply_sync_change(store: GalleryStore, change: SyncChange) -> Applied:
    """`apply_change`, telling also which upserts were dropped as erased."""
    with store._transaction(write=True) as db:
        applied = apply(store, db, change)
    store._checkpoint()  # erased persons must not linger in the WAL
    index_snapshot.discard_files(store.path.parent)  # stale now; replaced templates took the keys along
    return applied


def erased_uids(db: sqlite3.Connection) -> set[str]:
    db.execute(TOMBSTONES)
    return {r[0] for r in db.execute("SELECT uid FROM sync_erased")}


def apply(store: GalleryStore, db: sqlite3.Connection, change: SyncChange) -> Applied:
    """Applies `change` in the caller's open write transaction."""
    ensure_sync_tables(db)
    db.execute(TOMBSTONES)
    row = db.execute("SELECT seq FROM sync_scopes WHERE scope=?", (change.scope,)).fetchone()
    current = row[0] if row else 0
    if current != change.expect_seq:
        raise GalleryError(f"{store.path}: scope {change.scope} is at sequence {current}, not {change.expect_seq}: another bundle was applied meanwhile")
    at = now()
    for uid in change.erases:
        _erase_uid(store, db, uid)
        db.execute("INSERT OR IGNORE INTO sync_erased VALUES (?, ?)", (uid, at))
    erased = erased_uids(db)
    dropped = tuple(sorted({p.uid for p in change.upserts} & erased))
    upserts = [p for p in change.upserts if p.uid not in erased]
    members = {r[0] for r in db.execute("SELECT person_uid FROM sync_members WHERE scope=?", (change.scope,))}
    leaving = set(change.removes) & members
    if change.full:
        leaving |= members - {p.uid for p in upserts}
    for uid in sorted(leaving):
        db.execute("DELETE FROM sync_members WHERE scope=? AND person_uid=?", (change.scope, uid))
        if db.execute("SELECT 1 FROM sync_members WHERE person_uid=? LIMIT 1", (uid,)).fetchone() is None:
            _erase_uid(store, db, uid)
    for person in upserts:
        _upsert(store, db, person, at)
        db.execute("INSERT OR IGNORE INTO sync_members VALUES (?, ?)", (change.scope, person.uid))
    db.execute(
        "INSERT INTO sync_scopes VALUES (?, ?, ?) ON CONFLICT(scope) DO UPDATE SET seq=excluded.seq, applied=excluded.applied",
        (change.scope, change.seq, at),
    )
    version = sync_state(db).version + 1
    db.execute("INSERT INTO meta VALUES ('gallery_version', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(version),))
    return Applied(version, dropped)


def _erase_uid(store: GalleryStore, db: sqlite3.Connection, uid: str) -> None:
    row = db.execute("SELECT id FROM persons WHERE uid=?", (uid,)).fetchone()
    if row is not None:
        store._erase_rows(db, row[0])
    db.execute("DELETE FROM sync_members WHERE person_uid=?", (uid,))


def _upsert(store: GalleryStore, db: sqlite3.Connection, person: SyncPerson, at: int) -> None:
    vectors = records.check_templates(list(person.embeddings), list(person.qualities))
    model = records.check_model(person.model)
    row = db.execute("SELECT length(sealed) FROM templates WHERE model=? LIMIT 1", (model,)).fetchone()
    if row is not None and records.template_dim(row[0], SEAL_OVERHEAD) != vectors[0].size:
        raise GalleryError(f"bundle person {person.uid}: {vectors[0].size}-value templates, the gallery's {model} templates have {records.template_dim(row[0], SEAL_OVERHEAD)}")
    tag = store._name_tag(person.profile.name)
    clash = db.execute("SELECT id, uid FROM persons WHERE name_tag=? AND uid != ?", (tag, person.uid)).fetchone()
    if clash is not None:  # the same name enrolled here under another uid: the hub's person replaces it
        _erase_uid(store, db, clash[1])
    row = db.execute("SELECT id, wrapped_key FROM persons WHERE uid=?", (person.uid,)).fetchone()
    if row is None:
        pk = crypto.new_key()
        person_id = db.execute(
            "INSERT INTO persons (uid, name_tag, wrapped_key, sealed_profile, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (person.uid, tag, crypto.wrap_key(store._dk_aead, pk, records.person_key_aad(person.uid)), b"", at, at),
        ).lastrowid
    else:
        person_id, wrapped = row
        pk = store._person_key(person_id, person.uid, wrapped)
        # the old templates go the way of an erasure: overwritten, then deleted
        db.execute("UPDATE templates SET sealed=zeroblob(length(sealed)) WHERE person_id=?", (person_id,))
        db.execute("DELETE FROM templates WHERE person_id=?", (person_id,))
    aead = crypto.AESGCM(pk)
    sealed_profile = crypto.seal(aead, records.profile_to_bytes(person.profile), records.profile_aad(person.uid))
    db.execute("UPDATE persons SET name_tag=?, sealed_profile=?, updated=? WHERE id=?", (tag, sealed_profile, at, person_id))
    head = records.template_aad_head(model, person.uid)
    rows = []
    for vector, quality in zip(vectors, person.qualities, strict=True):
        template_uid = records.new_uid()
        rows.append((template_uid, person_id, model, crypto.seal(aead, records.template_to_bytes(vector, float(quality)), head + template_uid.encode()), at))
    db.executemany("INSERT INTO templates (uid, person_id, model, sealed, created) VALUES (?, ?, ?, ?, ?)", rows)


def local_person(store: GalleryStore, uid: str) -> tuple[records.PersonRecord, dict[str, list[records.TemplateRecord]]] | None:
    """A person by uid with its templates per model (what an enrollment upload carries); None
    when the person is gone (erased before the upload was built: nothing is sent)."""
    with store._transaction(write=False) as db:
        row = db.execute("SELECT id FROM persons WHERE uid=?", (uid,)).fetchone()
        models = [r[0] for r in db.execute("SELECT DISTINCT model FROM templates WHERE person_id=?", row or (-1,))]
    person = store.person(row[0]) if row is not None else None
    if person is None:
        return None
    return person, {model: store.person_templates(person.id, model) for model in models}
