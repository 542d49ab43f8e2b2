"""Retention: when a person's time in the gallery is up, the refusal until they are erased, the sweep.

A person is due for erasure when their `valid_until` has passed (reason `expired`) or their
retention has run out (reason `retention`). Their retention is the profile's `retention_days`,
else the shortest `[privacy] group_retention_days` of their groups, else none (kept until an
operator erases them). It counts from their consent time (the enrollment time when none was
recorded) or, with `[privacy] retention_from = "last_seen"`, from their last grant, whichever is
later — a kiosk customer who keeps coming back stays while they do.

`sweep(store, policy, now)` crypto-erases every due person exactly as `GalleryStore.remove` does
(rows overwritten then deleted, WAL checkpointed, index snapshots discarded) in one transaction,
and returns who went and why; the caller audits each one. Until the sweep comes, `refusal` is
what the decision path asks (edge/access/rules.py `CameraRules`): a due person is never granted.

A person a hub scope brought (`sync_members`) is erased here on the same deadline the hub
computes — except with `last_seen`, where only the hub sees every device's grants: the hub's
sweep erases them and pushes the erasure (sync/hub/retention.py). A person erased here that a
hub scope brought is tombstoned (`sync_erased`), so an older bundle cannot bring them back.

`person_seen` (person id, unix time of the last grant, hour granularity) is kept only with
`last_seen`; it holds no personal data and goes with the person's row (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.gallery import snapshot as index_snapshot
from edge.gallery.records import PersonProfile
from edge.gallery.retention_policy import RetentionPolicy
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import TOMBSTONES

SEEN_STEP_S = 3600  # a grant within this of the stored one is not written again
_SEEN = (
    "CREATE TABLE IF NOT EXISTS person_seen (person_id INTEGER PRIMARY KEY REFERENCES persons(id) ON DELETE CASCADE,"
    " at INTEGER NOT NULL)"
)
_SELECT = "SELECT p.id, p.uid, p.wrapped_key, p.sealed_profile, p.created FROM persons p"


@dataclass(frozen=True, slots=True)
class Erasure:
    uid: str
    reason: str  # one of REASONS


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _last_seen(db: sqlite3.Connection, tables: set[str], person_id: int) -> int | None:
    if "person_seen" not in tables:
        return None
    row = db.execute("SELECT at FROM person_seen WHERE person_id=?", (person_id,)).fetchone()
    return None if row is None else int(row[0])


def _hub_held(db: sqlite3.Connection, tables: set[str], uid: str) -> bool:
    return "sync_members" in tables and db.execute("SELECT 1 FROM sync_members WHERE person_uid=? LIMIT 1", (uid,)).fetchone() is not None


def record_seen(store: GalleryStore, person_id: int, at: int) -> None:
    """The person was granted at `at` (kept only for `retention_from = "last_seen"`)."""
    with store._transaction(write=True) as db:
        db.execute(_SEEN)
        if db.execute("SELECT 1 FROM persons WHERE id=?", (person_id,)).fetchone() is None:
            return  # erased meanwhile
        db.execute(
            "INSERT INTO person_seen VALUES (?, ?) ON CONFLICT(person_id) DO UPDATE SET at=excluded.at"
            " WHERE excluded.at >= person_seen.at + ?",
            (person_id, at, SEEN_STEP_S),
        )


def refusal(store: GalleryStore, person_id: int, profile: PersonProfile, policy: RetentionPolicy, now: float) -> str | None:
    """The decision path's question: `retention_expired` / `expired` when the person is due for
    erasure (or `removed` when already erased), else None."""
    with store._transaction(write=False) as db:
        row = db.execute("SELECT uid, created FROM persons WHERE id=?", (person_id,)).fetchone()
        if row is None:
            return "removed"
        tables = _tables(db)
        reason = policy.due(profile, int(row[1]), _last_seen(db, tables, person_id), now, _hub_held(db, tables, row[0]))
    return {"retention": "retention_expired", "expired": "expired"}.get(reason or "")


def sweep(store: GalleryStore, policy: RetentionPolicy, now: float) -> list[Erasure]:
    """Crypto-erases every due person (one transaction), like `GalleryStore.remove`."""
    erased: list[Erasure] = []
    with store._transaction(write=True) as db:
        tables = _tables(db)
        for person_id, uid, wrapped, sealed, created in db.execute(_SELECT + " ORDER BY p.id").fetchall():
            profile = store._profile(person_id, uid, AESGCM(store._person_key(person_id, uid, wrapped)), sealed)
            held = _hub_held(db, tables, uid)
            reason = policy.due(profile, int(created), _last_seen(db, tables, person_id), now, held)
            if reason is None:
                continue
            store._erase_rows(db, person_id)
            if held:
                db.execute(TOMBSTONES)
                db.execute("INSERT OR IGNORE INTO sync_erased VALUES (?, ?)", (uid, int(now)))
                db.execute("DELETE FROM sync_members WHERE person_uid=?", (uid,))
            erased.append(Erasure(uid, reason))
    if erased:
        store._checkpoint()  # the erased pages must not linger in the WAL
        index_snapshot.discard_files(store.path.parent)  # their keys went with the rows
    return erased

