"""What becomes of a device's enrollment upload on the hub: a new person, or an item an admin reviews.

The hub never merges an upload into an existing person on its own (docs/hub.md, review). A
checked upload (`sync.hub.uploads.check_enrollment`) becomes a new person only when nothing on the
hub resembles it: no live person has the same normalised name (the keyed name tag), and no live
person of the same model has a template within the "close face" threshold of the upload's. That
threshold is the shipped 1:1 calibration (`models/thresholds.toml`, what `[match] target_fmr`
reads on a device) at `CLOSE_FACE_FMR`, the per-comparison rate at which a device would take two
faces for one person; an embedder with no calibration cannot be compared, so its uploads always go
to review. The new person's groups are the upload's groups capped to the device's enroll groups
(`admin device add --enroll-groups`; none unless set), or those enroll groups when the upload
names none: a kiosk's customer never lands in "staff" because the kiosk said so.

Anything else is a review item, sealed at rest like a person (its own key wrapped by the hub's
KEK; AAD binds the item id), listing why it is held (same name as uid X, face close to uid X at
score s). An admin approves it into an existing person (`merge`: templates added, that person's
profile and groups kept), keeps it apart (`as_new`: groups capped as above, a duplicate name
refused), or rejects it (the sealed row crypto-erased). Each upload is recorded once per (device,
uid) in `uploads`, so a re-sent upload is acked again without a second person or item, and a uid
already on the hub is refused. Every outcome and decision is appended to `hub_audit` in the same
transaction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.gallery.changes import SyncPerson
from edge.gallery.crypto import aad, new_key, seal, unseal, unwrap_key, wrap_key
from sync.bundle import PERSON, person_doc, person_from_doc
from sync.hub.store import HubStore, HubStoreError
from sync.hub.uploads import UploadError, check_enrollment

CALIBRATION_FILE = Path(__file__).resolve().parents[2] / "models" / "thresholds.toml"
CLOSE_FACE_FMR = 1e-4  # the default `[match] target_fmr`: 1:1, "a device would take them for one person"
_COUNTER = "hub:review"  # the review ids' counter in the `scopes` table

SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS reviews (id BIGINT PRIMARY KEY, device TEXT NOT NULL, uid TEXT NOT NULL, audit_seq BIGINT NOT NULL,"
     " created BIGINT NOT NULL, reasons_json TEXT NOT NULL, wrapped_key BLOB, sealed BLOB, state TEXT NOT NULL, decided BIGINT, outcome_uid TEXT)"),
    ("CREATE TABLE IF NOT EXISTS uploads (device TEXT NOT NULL, uid TEXT NOT NULL, at BIGINT NOT NULL, outcome TEXT NOT NULL, review_id BIGINT,"
     " PRIMARY KEY (device, uid))"),
    "CREATE TABLE IF NOT EXISTS hub_audit (at BIGINT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hub_audit_at ON hub_audit (at)",
)


class ReviewError(HubStoreError):
    """A review request names an unknown or already decided item, or conflicts with the hub's persons."""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    device: str
    uid: str
    audit_seq: int
    created: int
    reasons: tuple[dict[str, Any], ...]
    state: str  # pending | merged | new | rejected
    decided: int | None
    outcome_uid: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    action: str  # "person" (added), "review" (held), "resent" (seen before: acked again)
    uid: str
    review_id: int | None = None


def _now() -> int:
    return int(time.time())


def close_face_threshold(model: str, path: Path = CALIBRATION_FILE) -> float | None:
    """The calibrated cosine at CLOSE_FACE_FMR for `model`; None when the model is not calibrated."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get(model)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(table, dict):
        return None
    for fmr, threshold in zip(table.get("fmr", ()), table.get("threshold", ()), strict=False):
        if math.isclose(float(fmr), CLOSE_FACE_FMR, rel_tol=1e-6):
            return float(threshold)
    return None


def _unit(vectors: tuple[np.ndarray, ...]) -> np.ndarray:
    m = np.asarray(vectors, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def capped_groups(upload_groups: tuple[str, ...], enroll_groups: tuple[str, ...]) -> tuple[str, ...]:
    """The upload's groups that the device may give, or all the device's enroll groups when it names none."""
    return tuple(sorted(set(upload_groups) & set(enroll_groups))) if upload_groups else tuple(sorted(enroll_groups))


def _with_groups(person: SyncPerson, groups: tuple[str, ...], name: str | None = None) -> SyncPerson:
    profile = dataclasses.replace(person.profile, groups=groups, **({"name": name} if name else {}))
    return SyncPerson(person.uid, profile, person.model, person.embeddings, person.qualities)


class ReviewQueue:
    def __init__(self, store: HubStore, calibration_file: Path = CALIBRATION_FILE) -> None:
        self.store = store
        self.db = store.db
        self.calibration_file = calibration_file
        with self.db.transaction():
            for statement in SCHEMA:
                self.db.execute(statement)

    # -- the hub's log of its own decisions ---------------------------------------------------
    def record(self, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO hub_audit VALUES (?, ?, ?, ?)", (_now(), action, subject, json.dumps(detail, sort_keys=True)))

    def history(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT at, action, subject, detail FROM hub_audit ORDER BY at DESC LIMIT ?", (limit,))
        return [{"at": r[0], "action": r[1], "subject": r[2], "detail": json.loads(r[3])} for r in reversed(rows)]

    # -- uploads --------------------------------------------------------------------------------
    def reasons(self, person: SyncPerson) -> list[dict[str, Any]]:
        """Why `person` may not become a new person on its own: [] when nothing resembles it."""
        found: list[dict[str, Any]] = []
        tag = self.store._tag(person.profile.name)
        for (uid,) in self.db.execute("SELECT uid FROM persons WHERE name_tag=? AND erased IS NULL", (tag,)):
            found.append({"why": "same_name", "uid": uid})
        threshold = close_face_threshold(person.model, self.calibration_file)
        if threshold is None:
            return [*found, {"why": "uncalibrated_model", "model": person.model}]
        probe = _unit(person.embeddings)
        for other in self.store.persons():
            if other.model != person.model or other.embeddings[0].size != probe.shape[1]:
                continue
            score = float((probe @ _unit(other.embeddings).T).max())
            if score >= threshold:
                found.append({"why": "close_face", "uid": other.uid, "score": round(score, 4), "threshold": round(threshold, 4)})
        return found

    def submit(self, device_id: str, message: dict[str, Any], persons: list[SyncPerson]) -> Outcome:
        """A checked upload becomes a person or a review item (once per device and uid)."""
        uid = message["uid"]
        person = max(persons, key=lambda p: (len(p.embeddings), p.model))  # one model per hub person
        with self.db.transaction():
            seen = self.db.execute("SELECT outcome, review_id FROM uploads WHERE device=? AND uid=?" + self.db.for_update(), (device_id, uid))
            if seen:
                return Outcome("resent", uid, seen[0][1])
            if self.db.execute("SELECT 1 FROM persons WHERE uid=?", (uid,)) or self.db.execute("SELECT 1 FROM uploads WHERE uid=?", (uid,)):
                raise UploadError(f"enrollment of {uid} from {device_id}: that uid is already on the hub")
            enroll_groups = self.store.device(device_id).enroll_groups
            why = self.reasons(person)
            detail = {"device": device_id, "audit_seq": message["audit_seq"], "model": person.model, "templates": len(person.embeddings)}
            if not why:
                groups = capped_groups(person.profile.groups, enroll_groups)
                self.store.add_person(_with_groups(person, groups))
                self.db.execute("INSERT INTO uploads VALUES (?, ?, ?, 'person', NULL)", (device_id, uid, _now()))
                self.record("upload.person", uid, {**detail, "groups": list(groups)})
                return Outcome("person", uid)
            item = self.store.next_seq(_COUNTER)
            wrapped, sealed = self._seal(item, person)
            self.db.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', NULL, NULL)",
                            (item, device_id, uid, message["audit_seq"], _now(), json.dumps(why), wrapped, sealed))
            self.db.execute("INSERT INTO uploads VALUES (?, ?, ?, 'review', ?)", (device_id, uid, _now(), item))
            self.record("upload.review", uid, {**detail, "review": item, "reasons": why})
            return Outcome("review", uid, item)

    # -- items, sealed at rest ------------------------------------------------------------------
    def _seal(self, item: int, person: SyncPerson) -> tuple[bytes, bytes]:
        key = new_key()
        sealed = seal(AESGCM(key), json.dumps(person_doc(person)).encode(), aad("hub-review", str(item)))
        return wrap_key(self.store._kek, key, aad("hub-review-key", str(item))), sealed

    def _row(self, item: int) -> tuple[ReviewItem, SyncPerson | None]:
        rows = self.db.execute("SELECT id, device, uid, audit_seq, created, reasons_json, state, decided, outcome_uid, wrapped_key, sealed"
                               " FROM reviews WHERE id=?", (item,))
        if not rows:
            raise ReviewError(f"no review item {item} on this hub (admin review list)")
        r = rows[0]
        entry = ReviewItem(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8])
        if r[9] is None:
            return entry, None
        key = unwrap_key(self.store._kek, r[9], aad("hub-review-key", str(item)), f"hub review {item} key")
        doc = json.loads(unseal(AESGCM(key), r[10], aad("hub-review", str(item)), f"hub review {item}"))
        return entry, person_from_doc(PERSON(doc, f"hub review {item}"), f"hub review {item}")

    def items(self, all_states: bool = False) -> list[tuple[ReviewItem, SyncPerson | None]]:
        """Review items (pending ones unless `all_states`), oldest first, with the upload while held."""
        ids = self.db.execute("SELECT id FROM reviews" + ("" if all_states else " WHERE state='pending'") + " ORDER BY id")
        return [self._row(i) for (i,) in ids]

    def _pending(self, item: int) -> tuple[ReviewItem, SyncPerson]:
        entry, person = self._row(item)
        if entry.state != "pending" or person is None:
            raise ReviewError(f"review item {item} was already decided ({entry.state})")
        return entry, person

    def _close(self, item: int, state: str, outcome_uid: str | None, detail: dict[str, Any]) -> None:
        self.db.execute("UPDATE reviews SET state=?, decided=?, outcome_uid=?, wrapped_key=NULL, sealed=NULL WHERE id=?",
                        (state, _now(), outcome_uid, item))
        self.record(f"review.{state}", str(item), detail)

    # -- an admin's decisions -------------------------------------------------------------------
    def approve_merge(self, item: int, target: str, by: str = "admin") -> str:
        """The held templates join person `target` (name or uid); its profile and groups stay."""
        with self.db.transaction():
            entry, person = self._pending(item)
            uid = self.store.find_person(target)
            old = next(p for p in self.store.persons() if p.uid == uid)
            if old.model != person.model or old.embeddings[0].size != person.embeddings[0].size:
                raise ReviewError(f"review item {item}: templates of {person.model} cannot join {uid}, enrolled with {old.model}")
            merged = SyncPerson(old.uid, old.profile, old.model, old.embeddings + person.embeddings, old.qualities + person.qualities)
            self.db.execute("DELETE FROM persons WHERE uid=?", (uid,))
            self.store.add_person(merged)
            self._close(item, "merged", uid, {"by": by, "device": entry.device, "upload": entry.uid, "into": uid, "templates": len(person.embeddings)})
        return uid

    def approve_new(self, item: int, name: str | None = None, by: str = "admin") -> str:
        """The upload becomes a person of its own (renamed to `name` if given), groups capped."""
        with self.db.transaction():
            entry, person = self._pending(item)
            groups = capped_groups(person.profile.groups, self.store.device(entry.device).enroll_groups)
            self.store.add_person(_with_groups(person, groups, name))  # refuses a duplicate name
            self._close(item, "new", entry.uid, {"by": by, "device": entry.device, "groups": list(groups), "renamed": bool(name)})
        return entry.uid

    def reject(self, item: int, by: str = "admin") -> None:
        """Refused: the held upload is crypto-erased (its key and sealed row destroyed)."""
        with self.db.transaction():
            entry, _person = self._pending(item)
            self._close(item, "rejected", None, {"by": by, "device": entry.device, "upload": entry.uid})


def accept_upload(store: HubStore, topic_device: str, payload: bytes, hub_private: X25519PrivateKey) -> Outcome:
    """The hub's handling of `devices/<id>/enroll`: checked (UploadError otherwise, nothing
    stored), then a new person or a review item; the caller acks the uid in every case."""
    message, persons = check_enrollment(store, topic_device, payload, hub_private)
    return ReviewQueue(store).submit(topic_device, message, persons)
