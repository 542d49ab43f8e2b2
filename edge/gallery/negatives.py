"""Negative templates ("not this person") and the recent probes they are made from.

A wrong match can be reported after the fact (`facegate gallery reject-match EVENT_ID`): the
fused probe of that decision becomes a *negative template* of the person it was matched to,
and from then on that person is named only with a clear margin over their negatives
(`Negatives.first_clear`, used by `Gallery.identify` and `Gallery.verify`).

Where the probe comes from: for every decision that named a person (grant or deny), the daemon
keeps the fused probe embedding in `recent_probes` for `[match] keep_probes_h` hours, at most
`keep_probes_max` rows (pruned on every write; `edge.gallery.probes` writes them off the
inference thread). Both tables live in the gallery database and hold embeddings only as
AES-256-GCM ciphertext under the person's own key, with an AAD binding model, person uid and
row (event id or negative uid): erasing the person (`GalleryStore.remove`, a hub erase)
destroys that key and deletes these rows with theirs (`erase_rows`), so a person's probes and
negatives are crypto-erased with them. The tables are created by the first write, like the
sync tables; a gallery that never kept a probe has neither.

Functions of a store, working inside its transactions (like `edge.gallery.admin`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import CryptoError, GalleryError
from edge.gallery import crypto, records
from edge.gallery.db import now

if TYPE_CHECKING:  # the store imports this module (erasure); the functions are handed a store
    from edge.gallery.store import GalleryStore

TABLES = (
    "CREATE TABLE IF NOT EXISTS recent_probes (event_id TEXT PRIMARY KEY,"
    " person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE, model TEXT NOT NULL,"
    " sealed BLOB NOT NULL, created INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS recent_probes_by_age ON recent_probes(created)",
    "CREATE TABLE IF NOT EXISTS negatives (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,"
    " person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE, model TEXT NOT NULL,"
    " event_id TEXT NOT NULL UNIQUE, sealed BLOB NOT NULL, created INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS negatives_by_person ON negatives(person_id, model)",
)
# A person's negatives are all scored whenever the person is a candidate above the threshold;
# past this many, the person's enrollment is the problem (re-enroll with better photos).
MAX_PER_PERSON = 32
DEFAULT_MARGIN = 0.05
_EVENT_ID = re.compile(r"[0-9a-f]{8,64}")
_FLOAT = np.dtype("<f4")


class RejectError(GalleryError):
    """`reject-match` refused; `code` is stable: bad_event_id, unknown_event, not_named,
    person_removed, probe_expired, probes_off, too_many_negatives."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Rejected:
    event_id: str
    person_id: int
    person_uid: str
    negative_uid: str
    negatives: int  # the person's negatives now
    already: bool = False  # this event was rejected before; nothing changed

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "person_uid": self.person_uid, "negative_uid": self.negative_uid,
                "negatives": self.negatives, "already": self.already}


@dataclass(frozen=True, slots=True)
class NegativeInfo:
    uid: str
    event_id: str
    model: str
    created: int


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='negatives'").fetchone() is not None


def _ensure_tables(db: sqlite3.Connection) -> None:
    for statement in TABLES:
        db.execute(statement)


def _probe_aad(model: str, person_uid: str, event_id: str) -> bytes:
    return crypto.aad("facegate", "recent-probes", records.SCHEMA_VERSION, model, person_uid, event_id)


def _negative_aad(model: str, person_uid: str, uid: str) -> bytes:
    return crypto.aad("facegate", "negatives", records.SCHEMA_VERSION, model, person_uid, uid)


def check_event_id(event_id: str) -> str:
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise RejectError("bad_event_id", f"{event_id!r} is not an event id (the `event_id` of a decision: 16 hex characters)")
    return event_id


def _vector(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype=_FLOAT).ravel()
    if vector.size == 0 or not np.all(np.isfinite(vector)):
        raise GalleryError("probe: an embedding must be non-empty and finite")
    return vector.tobytes()


# -- the daemon: keep a named decision's probe ---------------------------------------------------


def keep_probe(store: GalleryStore, event_id: str, person_id: int, embedding: np.ndarray, model: str, keep_s: float, max_rows: int) -> bool:
    """Seals `embedding` under the person's key as the probe of `event_id` and prunes; False when
    the person was removed meanwhile (nothing kept)."""
    plain, at = _vector(embedding), now()
    with store._transaction(write=True) as db:
        _ensure_tables(db)
        row = db.execute("SELECT uid, wrapped_key FROM persons WHERE id=?", (person_id,)).fetchone()
        if row is None:
            return False
        uid, wrapped = row
        sealed = crypto.seal(AESGCM(store._person_key(person_id, uid, wrapped)), plain, _probe_aad(model, uid, event_id))
        db.execute("INSERT OR REPLACE INTO recent_probes VALUES (?, ?, ?, ?, ?)", (event_id, person_id, model, sealed, at))
        _prune(db, keep_s, max_rows, at)
    return True


def _prune(db: sqlite3.Connection, keep_s: float, max_rows: int, at: int) -> int:
    gone = db.execute("DELETE FROM recent_probes WHERE created < ?", (at - keep_s,)).rowcount
    return gone + db.execute(
        "DELETE FROM recent_probes WHERE event_id IN (SELECT event_id FROM recent_probes ORDER BY created DESC, rowid DESC LIMIT -1 OFFSET ?)",
        (max(0, max_rows),),
    ).rowcount


def prune_probes(store: GalleryStore, keep_s: float, max_rows: int) -> int:
    """Drops probes older than `keep_s` and all but the newest `max_rows`; keep_s 0 drops all."""
    with store._transaction(write=False) as db:
        if not _has_tables(db):
            return 0
    with store._transaction(write=True) as db:
        return _prune(db, keep_s, max_rows if keep_s > 0 else 0, now())


# -- the admin: reject a match ------------------------------------------------------------------


def reject(store: GalleryStore, event_id: str) -> Rejected | None:
    """Moves the kept probe of `event_id` to its person's negatives, in one transaction; None
    when no probe of that event is kept (see `missing_probe`). Prune first: an expired row
    would otherwise still be found."""
    check_event_id(event_id)
    with store._transaction(write=False) as db:
        if not _has_tables(db):
            return None
    with store._transaction(write=True) as db:
        done = db.execute(
            "SELECT n.person_id, p.uid, n.uid FROM negatives n JOIN persons p ON p.id = n.person_id WHERE n.event_id=?", (event_id,)
        ).fetchone()
        if done is not None:
            return Rejected(event_id, done[0], done[1], done[2], _count(db, done[0]), already=True)
        row = db.execute(
            "SELECT r.person_id, r.model, r.sealed, p.uid, p.wrapped_key FROM recent_probes r JOIN persons p ON p.id = r.person_id"
            " WHERE r.event_id=?", (event_id,),
        ).fetchone()
        if row is None:
            return None
        person_id, model, sealed, person_uid, wrapped = row
        if _count(db, person_id) >= MAX_PER_PERSON:
            raise RejectError(
                "too_many_negatives",
                f"person {person_uid} has {MAX_PER_PERSON} negatives already; a person this often mistaken needs a better "
                "enrollment (re-enroll with clearer photos), or clear old negatives with `facegate gallery negatives NAME --clear`",
            )
        aead = AESGCM(store._person_key(person_id, person_uid, wrapped))
        try:
            plain = crypto.unseal(aead, sealed, _probe_aad(model, person_uid, event_id), f"kept probe of event {event_id}")
        except CryptoError as exc:
            raise GalleryError(f"{store.path}: {exc}") from exc
        uid = records.new_uid()
        db.execute(
            "INSERT INTO negatives (uid, person_id, model, event_id, sealed, created) VALUES (?, ?, ?, ?, ?, ?)",
            (uid, person_id, model, event_id, crypto.seal(aead, plain, _negative_aad(model, person_uid, uid)), now()),
        )
        db.execute("UPDATE recent_probes SET sealed=zeroblob(length(sealed)) WHERE event_id=?", (event_id,))
        db.execute("DELETE FROM recent_probes WHERE event_id=?", (event_id,))
        return Rejected(event_id, person_id, person_uid, uid, _count(db, person_id))


def missing_probe(store: GalleryStore, event_id: str, decision: dict[str, Any] | None, keep_h: float) -> RejectError:
    """Why no probe of `event_id` is kept, from its `decision` audit record (None: not audited)."""
    if decision is None:
        return RejectError("unknown_event", f"no decision with event id {event_id} in this device's audit journal; "
                           "copy the `event_id` of the decision (events output, ZeroMQ, MQTT, `facegate audit tail`)")
    uid = decision.get("person_uid")
    if decision.get("decision") not in ("grant", "deny") or not uid:
        return RejectError("not_named", f"decision {event_id} ({decision.get('decision')}, {decision.get('reason')}) named nobody: there is no match to reject")
    with store._transaction(write=False) as db:
        present = db.execute("SELECT 1 FROM persons WHERE uid=?", (uid,)).fetchone() is not None
    if not present:
        return RejectError("person_removed", f"the person of decision {event_id} ({uid}) has since been removed from the gallery; nothing to reject")
    return RejectError("probe_expired", f"the probe of decision {event_id} is no longer kept: probes are kept {keep_h:g} h "
                       "([match] keep_probes_h) and at most [match] keep_probes_max of them; report a wrong match sooner, or raise those")


def _count(db: sqlite3.Connection, person_id: int) -> int:
    return int(db.execute("SELECT count(*) FROM negatives WHERE person_id=?", (person_id,)).fetchone()[0])


def list_negatives(store: GalleryStore, person_id: int) -> list[NegativeInfo]:
    with store._transaction(write=False) as db:
        if not _has_tables(db):
            return []
        rows = db.execute("SELECT uid, event_id, model, created FROM negatives WHERE person_id=? ORDER BY id", (person_id,)).fetchall()
    return [NegativeInfo(*row) for row in rows]


def clear_negatives(store: GalleryStore, person_id: int, uid: str | None = None) -> int:
    """Deletes the person's negatives (only `uid` when given); how many went."""
    with store._transaction(write=False) as db:
        if not _has_tables(db):
            return 0
    where, args = ("person_id=? AND uid=?", (person_id, uid)) if uid else ("person_id=?", (person_id,))
    with store._transaction(write=True) as db:
        db.execute(f"UPDATE negatives SET sealed=zeroblob(length(sealed)) WHERE {where}", args)
        return db.execute(f"DELETE FROM negatives WHERE {where}", args).rowcount


# -- the store: erasure and status ----------------------------------------------------------------


def erase_rows(db: sqlite3.Connection, person_id: int) -> None:
    """Inside an erasure's transaction (`GalleryStore._erase_rows`): the person's probes and
    negatives overwritten, then deleted, like their templates."""
    if not _has_tables(db):
        return
    for table in ("recent_probes", "negatives"):
        db.execute(f"UPDATE {table} SET sealed=zeroblob(length(sealed)) WHERE person_id=?", (person_id,))
        db.execute(f"DELETE FROM {table} WHERE person_id=?", (person_id,))


def counts(db: sqlite3.Connection) -> dict[str, int]:
    if not _has_tables(db):
        return {"negatives": 0, "recent_probes": 0}
    return {table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) for table in ("negatives", "recent_probes")}


# -- in memory: what identify checks ----------------------------------------------------------------


class Negatives:
    """Each person's negative templates of one model, decrypted at gallery open (a few per person)."""

    def __init__(self, by_person: dict[int, np.ndarray], stamp: tuple[int, int]) -> None:
        self._by_person = by_person
        self.stamp = stamp  # (count, largest id): changes with every add or delete

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_person.values())

    def drop(self, person_id: int) -> None:
        self._by_person.pop(person_id, None)

    def first_clear(self, ranked: Sequence[tuple[int, float]], probe: np.ndarray, threshold: float, margin: float) -> tuple[int | None, list[int]]:
        """(the index of the first (person id, score) that clears `threshold` and beats its own
        best negative by `margin`, or None; the indexes refused for their negatives).

        Only candidates above the threshold are scored, so a search costs one small product per
        person that could have been named (usually one). A refused candidate does not promote the
        next: that one is named only if it clears everything on its own.
        """
        refused = []
        for i, (person_id, score) in enumerate(ranked):
            if score < threshold:
                break
            negatives = self._by_person.get(person_id)
            if negatives is not None and float(np.max(negatives @ probe)) + margin > score:
                refused.append(i)
                continue
            return i, refused
        return None, refused


def stamp(store: GalleryStore) -> tuple[int, int]:
    with store._transaction(write=False) as db:
        return _stamp(db)


def _stamp(db: sqlite3.Connection) -> tuple[int, int]:
    if not _has_tables(db):
        return (0, 0)
    n, last = db.execute("SELECT count(*), coalesce(max(id), 0) FROM negatives").fetchone()
    return int(n), int(last)


def load(store: GalleryStore, model: str) -> Negatives:
    """Every negative of `model`, decrypted, per person; GalleryError naming a record that fails."""
    by_person: dict[int, list[np.ndarray]] = {}
    with store._transaction(write=False) as db:
        current = _stamp(db)
        if current == (0, 0):
            return Negatives({}, current)
        rows = db.execute(
            "SELECT n.person_id, n.uid, n.sealed, p.uid, p.wrapped_key FROM negatives n JOIN persons p ON p.id = n.person_id"
            " WHERE n.model=? ORDER BY n.person_id, n.id", (model,),
        ).fetchall()
    aead, key_of = None, -1
    for person_id, uid, sealed, person_uid, wrapped in rows:
        if person_id != key_of:
            aead, key_of = AESGCM(store._person_key(person_id, person_uid, wrapped)), person_id
        try:
            plain = crypto.unseal(aead, sealed, _negative_aad(model, person_uid, uid), f"negative {uid} (person {person_id})")
        except CryptoError as exc:
            raise GalleryError(f"{store.path}: {exc}; clear the person's negatives with `facegate gallery negatives NAME --clear`") from exc
        by_person.setdefault(person_id, []).append(np.frombuffer(plain, dtype=_FLOAT).astype(np.float32))
    return Negatives({pid: np.stack(vs) for pid, vs in by_person.items()}, current)
