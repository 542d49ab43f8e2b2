"""The encrypted on-device gallery: persons and templates in one SQLite file, personal data sealed.

`<data_dir>/gallery.db` (WAL, synchronous=FULL, secure_delete; see `edge.gallery.db`) holds
names, groups, consent and embeddings only as AES-256-GCM ciphertext under per-person keys (see
`edge.gallery.crypto` for the key hierarchy, `edge.gallery.records` for the sealed formats). Plaintext
columns are ids, random uids, keyed name tags, embedder model names and timestamps.

Every change is one transaction: an enrollment (the person and all its templates), a removal
(crypto-erase), a device-key rotation (every person key re-wrapped). A crash leaves the old or
the new state, never a mix. A record that fails authentication raises GalleryError naming it;
it is never decrypted as someone else.

Key rotation and the integrity check (`edge.gallery.admin`) and applying a hub change
(`edge.gallery.sync_apply.apply_change`) are functions of a store, working inside its
transactions; the store imports neither.

One store per thread. Several processes may open one gallery (SQLite locking); a store notices
when another process has rotated the device key.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import CryptoError, GalleryError, KeyfileError
from edge.gallery import crypto, negatives, records
from edge.gallery import db as gallery_db
from edge.gallery import snapshot as index_snapshot
from edge.gallery.crypto import KEY_BYTES, SEAL_OVERHEAD
from edge.gallery.db import GALLERY_FILE, SyncState, now
from edge.gallery.records import PersonProfile, PersonRecord, TemplateKeys, TemplateRecord

__all__ = ["GALLERY_FILE", "GalleryStore", "PersonProfile", "PersonRecord", "TemplateRecord"]

_LOG = logging.getLogger(__name__)
_PAGE_ROWS = 512  # rows per query when iterating templates, so no read snapshot stays open long
_RESTORE = "remove and re-enroll the person, or restore the gallery from a backup"
_PERSON_SELECT = (
    "SELECT p.id, p.uid, p.wrapped_key, p.sealed_profile, p.created, p.updated,"
    " (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM persons p"
)
EnrollItem = tuple[PersonProfile, Sequence[np.ndarray], Sequence[float]]


class GalleryStore:
    """`GalleryStore.open(data_dir, kek)`; enroll / find / remove / load_embeddings; close when done."""

    def __init__(self, path: Path, db: sqlite3.Connection, kek: bytes) -> None:
        self.path = path
        self._db = db
        self._keks = {crypto.kek_id(kek): kek}  # every KEK this store may (re-)wrap the DK for
        self._set_device_key(*gallery_db.device_key(db, path, self._keks))

    @classmethod
    def open(cls, data_dir: Path, kek: bytes, create: bool = False) -> GalleryStore:
        """Opens `<data_dir>/gallery.db`; `create=True` initialises a new gallery (new DK) if none.

        A wrong KEK raises CryptoError before anything is written.
        """
        if not isinstance(kek, bytes) or len(kek) != KEY_BYTES:
            raise KeyfileError(f"key-encryption key must be {KEY_BYTES} bytes (got {len(kek) if isinstance(kek, bytes) else type(kek).__name__})")
        path = Path(data_dir) / GALLERY_FILE
        if not gallery_db.probe(path, kek):
            if not create:
                raise GalleryError(f"{path}: no gallery here; create one with `facegate keys init` or by enrolling someone")
            gallery_db.initialise(path, kek)
        return cls(path, gallery_db.connect(path), kek)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- keys and transactions -------------------------------------------------------------

    def _set_device_key(self, dk: bytes, version: int, kid: str) -> None:
        self._dk, self._dk_version, self._kek_id = dk, version, kid
        self._dk_aead = AESGCM(dk)
        self._tag_key = crypto.derive_key(dk, records.NAME_TAG_PURPOSE)

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            # Another process may have rotated the DK since we read it; wrapping a new person
            # key with the old DK would lock that person out, so each transaction checks first.
            row = self._db.execute("SELECT dk_version FROM device_keys LIMIT 1").fetchone()
            if row is not None and row[0] != self._dk_version:
                self._set_device_key(*gallery_db.device_key(self._db, self.path, self._keks))
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):  # locked, disk full, I/O error: say where, no traceback
                raise GalleryError(f"{self.path}: {exc}; nothing was changed") from exc
            raise

    def _checkpoint(self) -> None:
        busy, frames, done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or frames != done:
            _LOG.warning("%s: WAL checkpoint incomplete (%s of %s frames; a reader is active); old pages stay in the WAL until the next checkpoint", self.path, done, frames)

    def _person_key(self, person_id: int, uid: str, wrapped: bytes) -> bytes:
        try:
            return crypto.unwrap_key(self._dk_aead, wrapped, records.person_key_aad(uid), f"person {person_id} key")
        except CryptoError as exc:
            raise GalleryError(f"{self.path}: {exc}; {_RESTORE}") from exc

    def _profile(self, person_id: int, uid: str, aead: AESGCM, sealed: bytes) -> PersonProfile:
        try:
            return records.profile_from_bytes(crypto.unseal(aead, sealed, records.profile_aad(uid), f"person {person_id} profile"))
        except CryptoError as exc:
            raise GalleryError(f"{self.path}: {exc}; {_RESTORE}") from exc

    def _name_tag(self, name: str) -> bytes:
        return crypto.keyed_tag(self._tag_key, records.normalise_name(name))

    # -- enroll ----------------------------------------------------------------------------

    def enroll(self, profile: PersonProfile, embeddings: Sequence[np.ndarray], qualities: Sequence[float], model: str) -> PersonRecord:
        """A new person, or more templates for the person of that name (profiles merged, see
        `records.merge_profiles`). One transaction: the person and all the templates, or nothing."""
        vectors, model = records.check_templates(list(embeddings), list(qualities)), records.check_model(model)
        with self._transaction(write=True):
            return self._enroll_one(profile, vectors, qualities, model, now())

    def enroll_many(self, items: Iterable[EnrollItem], model: str, batch: int = 200) -> list[PersonRecord]:
        """Bulk enrollment: one transaction per `batch` templates or more, whole persons only.

        Items are validated before their transaction; a bad item raises, naming its position,
        after the batches before it have committed. `items` may be a lazy iterable.
        """
        records.check_model(model)
        enrolled: list[PersonRecord] = []
        pending: list[tuple[PersonProfile, list[np.ndarray], list[float]]] = []
        n_pending = 0
        for i, (profile, embeddings, qualities) in enumerate(items):
            try:
                pending.append((profile, records.check_templates(list(embeddings), list(qualities)), list(qualities)))
            except GalleryError as exc:
                raise GalleryError(f"enroll_many: item {i}: {exc}") from exc
            n_pending += len(pending[-1][1])
            if n_pending >= batch:
                enrolled += self._enroll_batch(pending, model)
                pending, n_pending = [], 0
        if pending:
            enrolled += self._enroll_batch(pending, model)
        return enrolled

    def _enroll_batch(self, items: list[tuple[PersonProfile, list[np.ndarray], list[float]]], model: str) -> list[PersonRecord]:
        created = now()
        with self._transaction(write=True):
            return [self._enroll_one(profile, vectors, qualities, model, created) for profile, vectors, qualities in items]

    def _enroll_one(self, profile: PersonProfile, vectors: list[np.ndarray], qualities: Sequence[float], model: str, at: int) -> PersonRecord:
        db = self._db
        row = db.execute("SELECT length(sealed) FROM templates WHERE model=? LIMIT 1", (model,)).fetchone()
        if row is not None and records.template_dim(row[0], SEAL_OVERHEAD) != vectors[0].size:
            raise GalleryError(
                f"enroll: the gallery's {model} templates have {records.template_dim(row[0], SEAL_OVERHEAD)} values, "
                f"these have {vectors[0].size}; enroll with the embedder the gallery was built with"
            )
        tag = self._name_tag(profile.name)
        row = db.execute("SELECT id, uid, wrapped_key, sealed_profile, created FROM persons WHERE name_tag=?", (tag,)).fetchone()
        if row is None:
            uid, pk, created = records.new_uid(), crypto.new_key(), at
            aead = AESGCM(pk)
            person_id = db.execute(
                "INSERT INTO persons (uid, name_tag, wrapped_key, sealed_profile, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (uid, tag, crypto.wrap_key(self._dk_aead, pk, records.person_key_aad(uid)), crypto.seal(aead, records.profile_to_bytes(profile), records.profile_aad(uid)), at, at),
            ).lastrowid
        else:
            person_id, uid, wrapped, sealed, created = row
            aead = AESGCM(self._person_key(person_id, uid, wrapped))
            profile = records.merge_profiles(self._profile(person_id, uid, aead, sealed), profile)
            db.execute("UPDATE persons SET sealed_profile=?, updated=? WHERE id=?", (crypto.seal(aead, records.profile_to_bytes(profile), records.profile_aad(uid)), at, person_id))
        rows, head = [], records.template_aad_head(model, uid)
        for vector, quality in zip(vectors, qualities, strict=True):
            template_uid = records.new_uid()
            sealed_template = crypto.seal(aead, records.template_to_bytes(vector, float(quality)), head + template_uid.encode())
            rows.append((template_uid, person_id, model, sealed_template, at))
        db.executemany("INSERT INTO templates (uid, person_id, model, sealed, created) VALUES (?, ?, ?, ?, ?)", rows)
        n = db.execute("SELECT count(*) FROM templates WHERE person_id=?", (person_id,)).fetchone()[0]
        return PersonRecord(int(person_id or 0), uid, profile, n, created, at)

    # -- read ------------------------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> PersonRecord:
        person_id, uid, wrapped, sealed, created, updated, n = row
        aead = AESGCM(self._person_key(person_id, uid, wrapped))
        return PersonRecord(person_id, uid, self._profile(person_id, uid, aead, sealed), n, created, updated)

    def find(self, name: str) -> PersonRecord | None:
        with self._transaction(write=False) as db:
            row = db.execute(f"{_PERSON_SELECT} WHERE p.name_tag=?", (self._name_tag(name),)).fetchone()
            return None if row is None else self._record(row)

    def person(self, person_id: int) -> PersonRecord | None:
        """One person by id: decrypts only that person's profile (identify names candidates this way)."""
        with self._transaction(write=False) as db:
            row = db.execute(f"{_PERSON_SELECT} WHERE p.id=?", (person_id,)).fetchone()
            return None if row is None else self._record(row)

    def persons(self) -> list[PersonRecord]:
        with self._transaction(write=False) as db:
            return [self._record(row) for row in db.execute(f"{_PERSON_SELECT} ORDER BY p.id").fetchall()]

    def _template_keys(self, model: str) -> TemplateKeys:
        def lookup(person_id: int) -> tuple[str | bytes, bytes] | None:
            return self._db.execute("SELECT uid, wrapped_key FROM persons WHERE id=?", (person_id,)).fetchone()

        return TemplateKeys(self._dk, model, lookup, str(self.path))

    def _decode(self, rows: list[tuple[int, int, str, bytes]], model: str, keys: TemplateKeys) -> list[TemplateRecord]:
        out = []
        for template_id, person_id, uid, sealed in rows:
            aead, head = keys(person_id)
            try:
                plain = crypto.unseal(aead, sealed, head + uid.encode(), f"template {template_id} (person {person_id})")
            except CryptoError as exc:
                raise GalleryError(f"{self.path}: {exc}; {_RESTORE}") from exc
            embedding, quality = records.template_from_bytes(plain)
            out.append(TemplateRecord(template_id, person_id, model, embedding, quality))
        return out

    def templates(self, model: str) -> Iterator[TemplateRecord]:
        """Every template of `model`, decrypted, in id order; read in pages, no long snapshot."""
        keys = self._template_keys(model)
        last = 0
        while True:
            with self._transaction(write=False) as db:
                rows = db.execute(
                    "SELECT id, person_id, uid, sealed FROM templates WHERE model=? AND id>? ORDER BY id LIMIT ?", (model, last, _PAGE_ROWS)
                ).fetchall()
                page = self._decode(rows, model, keys)
            yield from page
            if len(rows) < _PAGE_ROWS:
                return
            last = rows[-1][0]

    def person_templates(self, person_id: int, model: str) -> list[TemplateRecord]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT id, person_id, uid, sealed FROM templates WHERE person_id=? AND model=? ORDER BY id", (person_id, model)).fetchall()
            return self._decode(rows, model, self._template_keys(model))

    @contextmanager
    def embedding_blocks(self, model: str) -> Iterator[records.LoadedTemplates]:
        """The templates of `model` in id order, decrypted block by block while they are read:
        `with store.embedding_blocks(model) as loaded:` then iterate `loaded.blocks` inside.

        The open-time hot path: rows stream from one read snapshot, each decrypted straight into
        a reused block buffer with `decrypt_into`; a person key is unwrapped once per run of that
        person's templates (once per person unless enrollments interleaved). A record that fails
        authentication raises GalleryError naming the template and person: a tampered gallery is
        not loaded in part (`edge.gallery.admin.integrity_check` lists every bad record).
        """
        with self._transaction(write=False) as db:
            n = db.execute("SELECT count(*) FROM templates WHERE model=?", (model,)).fetchone()[0]
            first = db.execute("SELECT length(sealed) FROM templates WHERE model=? ORDER BY id LIMIT 1", (model,)).fetchone()
            dim = records.template_dim(first[0], SEAL_OVERHEAD) if first else 0
            # One query joining each template to its person's key: SQLite's primary-key lookups
            # cost less than a Python dict of every wrapped key (measured 0.1 s less at 100k).
            rows = db.execute(
                "SELECT t.id, t.person_id, CAST(p.uid AS BLOB), p.wrapped_key, CAST(t.uid AS BLOB), t.sealed"
                " FROM templates t JOIN persons p ON p.id = t.person_id WHERE t.model=? ORDER BY t.id",
                (model,),
            )
            blocks = records.decrypt_template_blocks(rows, n, dim, self._dk, model, str(self.path), _RESTORE)
            try:
                yield records.LoadedTemplates(n, dim, index_snapshot.fingerprint(db, model), blocks)
            finally:
                blocks.close()

    def load_embeddings(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(template ids int64, person ids int64, vectors float32 (n, dim)) of `model`, id order:
        `embedding_blocks` gathered into whole arrays."""
        with self.embedding_blocks(model) as loaded:
            ids, person_ids, vectors = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty((0, loaded.dim), np.float32)]
            for block in loaded.blocks:
                ids.append(block.ids)
                person_ids.append(block.person_ids)
                vectors.append(block.vectors.copy())
        return np.concatenate(ids), np.concatenate(person_ids), np.concatenate(vectors)

    # -- index snapshot (edge.gallery.snapshot) -----------------------------------------------

    def index_snapshot_key(self, model: str) -> tuple[bytes, str] | None:
        """(key, fingerprint) of `model`'s index snapshot when one matches the gallery now."""
        with self._transaction(write=False) as db:
            stamp = index_snapshot.fingerprint(db, model)
            key = index_snapshot.stored_key(db, self._dk_aead, self._dk_version, model, stamp)
        return None if key is None else (key, stamp)

    def record_index_snapshot(self, model: str, stamp: str, key: bytes) -> bool:
        """Keeps `key` for the snapshot taken at `stamp`; False when the gallery changed since."""
        with self._transaction(write=True) as db:
            return index_snapshot.record_key(db, self._dk_aead, self._dk_version, model, stamp, key)

    def drop_index_snapshots(self) -> None:
        """Every snapshot key destroyed and every snapshot file deleted (`index_snapshot = false`)."""
        if not index_snapshot.files(self.path.parent):
            with self._transaction(write=False) as db:  # the usual case: nothing to drop, no write lock
                if not index_snapshot.has_keys(db):
                    return
        with self._transaction(write=True) as db:
            index_snapshot.drop_keys(db)
        self._checkpoint()
        index_snapshot.discard_files(self.path.parent)

    # -- remove ----------------------------------------------------------------------------

    def remove(self, name: str) -> bool:
        """Crypto-erase: destroys the person key and every sealed blob, then deletes the rows.

        The blobs are overwritten in place before the DELETE so that the new page images in the
        WAL already hold zeros; secure_delete zeroes the freed space; the TRUNCATE checkpoint
        then drops the WAL frames that still held the old pages. Copies elsewhere (backups) keep
        the sealed blobs, but the only key that opened them is gone.
        """
        tag = self._name_tag(name)
        with self._transaction(write=True) as db:
            row = db.execute("SELECT id FROM persons WHERE name_tag=?", (tag,)).fetchone()
            if row is None:
                return False
            self._erase_rows(db, row[0])
        self._checkpoint()
        index_snapshot.discard_files(self.path.parent)  # their keys went with the rows
        return True

    def _erase_rows(self, db: sqlite3.Connection, person_id: int) -> None:
        negatives.erase_rows(db, person_id)  # their kept probes and negative templates go first
        db.execute("UPDATE templates SET sealed=zeroblob(length(sealed)) WHERE person_id=?", (person_id,))
        db.execute(
            "UPDATE persons SET wrapped_key=zeroblob(length(wrapped_key)), sealed_profile=zeroblob(length(sealed_profile)),"
            " name_tag=randomblob(32) WHERE id=?",
            (person_id,),
        )
        db.execute("DELETE FROM templates WHERE person_id=?", (person_id,))
        db.execute("DELETE FROM persons WHERE id=?", (person_id,))

    # -- status ----------------------------------------------------------------------------

    def sync_state(self) -> SyncState:
        """The gallery version and each hub scope's last applied sequence."""
        with self._transaction(write=False) as db:
            return gallery_db.sync_state(db)

    def status(self) -> dict[str, Any]:
        with self._transaction(write=False) as db:
            kek_ids = [r[0] for r in db.execute("SELECT kek_id FROM device_keys ORDER BY created")]
            per_model = dict(db.execute("SELECT model, count(*) FROM templates GROUP BY model ORDER BY model").fetchall())
            persons = db.execute("SELECT count(*) FROM persons").fetchone()[0]
            kept = negatives.counts(db)
        return {
            "schema_version": records.SCHEMA_VERSION,
            "kek_id": self._kek_id,
            "kek_ids": kek_ids,
            "kek_rotation_pending": len(kek_ids) > 1,
            "device_key_version": self._dk_version,
            "persons": persons,
            **kept,  # negative templates ("not this person") and the probes kept for reject-match
            "templates": per_model,
            "files": {p.name: p.stat().st_size for p in sorted(self.path.parent.glob(GALLERY_FILE + "*")) if p.is_file()},
        }
