"""The device gallery: encrypted store + in-memory search index + open-set decision.

`GalleryStore` keeps persons and templates as ciphertext on disk; at open, the templates of the
configured embedder are decrypted straight into a `VectorIndex` that lives only in memory.
Identification searches templates, keeps each person's best template score, and names the
person only when that score clears the 1:N threshold, which follows the gallery's size
(`ThresholdPolicy`, from `[match] stranger_accept_rate`) and is recomputed whenever it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from edge.errors import ConfigError, GalleryError
from edge.gallery import negatives as negative_templates
from edge.gallery import snapshot as index_snapshot
from edge.gallery.credential_index import CredentialIndex
from edge.gallery.index import VectorIndex
from edge.gallery.records import LoadedTemplates
from edge.gallery.store import GalleryStore, PersonProfile, PersonRecord
from edge.gallery.thresholds import ThresholdPolicy

# Templates fetched per requested candidate: a person has several templates, and the k best
# templates may all belong to one person.
_TEMPLATES_PER_CANDIDATE = 4
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    person: str
    person_id: int
    score: float

    def to_dict(self) -> dict[str, object]:
        return {"person": self.person, "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class Match:
    """The open-set answer for one probe: `person` is None when nobody clears the threshold."""

    person: str | None
    score: float
    threshold: float
    candidates: tuple[Candidate, ...]
    # Candidates above the threshold refused for a negative template ("not this person",
    # edge/gallery/negatives.py): the probe was within the margin of one of their negatives.
    rejected: tuple[Candidate, ...] = ()

    @property
    def named(self) -> Candidate | None:
        """The candidate `person` names (None when nobody is named)."""
        return next((c for c in self.candidates if c.person == self.person), None) if self.person is not None else None

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            # No candidate (empty gallery) has no score: null, since NaN is not JSON.
            "score": round(self.score, 4) if np.isfinite(self.score) else None,
            "threshold": round(self.threshold, 4),
            "candidates": [c.to_dict() for c in self.candidates],
            "rejected": [c.to_dict() for c in self.rejected],
        }


def _refuse_other_models(store: GalleryStore, model: str) -> None:
    """A gallery enrolled with another embedder would silently recognise nobody: say so."""
    per_model = store.status().get("templates", {})
    if per_model and not per_model.get(model):
        held = ", ".join(f"{m} ({n})" for m, n in sorted(per_model.items()))
        raise GalleryError(
            f"{store.path}: the gallery holds templates of {held}, none of {model}; re-enroll with "
            f"this embedder, or set [embed] model/precision back to the one it was enrolled with"
        )


class Gallery:
    """`Gallery.open(...)`, then `identify`, `verify`, `enroll`, `remove`; close when done."""

    def __init__(self, store: GalleryStore, model: str, dim: int, threshold: float | ThresholdPolicy, snapshot: bool = True) -> None:
        """Opens the index from the encrypted snapshot when one matches the gallery (`snapshot`
        on, `edge.gallery.snapshot`), else from the templates — and then, for a large gallery,
        leaves a snapshot for the next open."""
        self.store = store
        self.model = model
        self.policy = threshold if isinstance(threshold, ThresholdPolicy) else ThresholdPolicy.fixed_at(threshold)
        self.threshold = self.policy.verify  # 1:N: what `identify` names a person at (set below)
        self.threshold_fmr: float | None = None  # the per-comparison rate `threshold` is set at
        self.verify_threshold = self.policy.verify  # 1:1: what `verify` accepts at (a card or PIN chose the person)
        _refuse_other_models(store, model)
        self.index = VectorIndex(dim)
        self.opened_from = "templates"
        if not snapshot:
            # Turned off: no copy of the index may stay behind from when it was on.
            store.drop_index_snapshots()
        if not (snapshot and self._restore_snapshot()):
            stamp = self._load_templates()
            if snapshot and len(self.index) >= index_snapshot.MIN_TEMPLATES:
                self._save_snapshot(stamp)
        self._follow_size()
        # Names are decrypted when a person first appears among candidates, not at open:
        # decrypting 100k profiles up front would cost more than loading the templates.
        self._names: dict[int, str] = {}
        # Each person's negative templates, in memory; a person is named only with a clear
        # margin over them (the loader sets `negative_margin` from [match] negative_margin).
        self.negatives = negative_templates.load(store, model)
        self.negative_margin = negative_templates.DEFAULT_MARGIN
        self._credentials: CredentialIndex | None = None  # built when a card or PIN door first asks

    def _load_templates(self) -> str:
        """The cold open: every template decrypted, block by block, into the index. Returns the
        gallery fingerprint the index was built at."""
        template_ids: list[np.ndarray] = [np.empty(0, np.int64)]
        person_ids: list[np.ndarray] = [np.empty(0, np.int64)]

        def blocks(loaded: LoadedTemplates) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for block in loaded.blocks:
                template_ids.append(block.ids)
                person_ids.append(block.person_ids)
                yield block.ids, block.vectors

        # Decrypted block by block into the index: no whole-gallery plaintext copy is ever made.
        with self.store.embedding_blocks(self.model) as loaded:
            self.index.build_from_blocks(loaded.count, blocks(loaded))
        # Template id → person id as two aligned arrays, template ids ascending (the store's ids
        # only grow): a search's few ids are looked up with searchsorted. A dict of 100k entries
        # and a per-person list of templates cost 0.13 s of the open.
        self._template_ids = np.concatenate(template_ids)
        self._template_persons = np.concatenate(person_ids)
        return loaded.fingerprint

    def _snapshot_path(self) -> Path:
        return index_snapshot.file_for(self.store.path.parent, self.model)

    def _restore_snapshot(self) -> bool:
        found = self.store.index_snapshot_key(self.model)
        if found is None:
            return False
        key, stamp = found
        arrays = index_snapshot.read(self._snapshot_path(), self.model, stamp, key)
        if arrays is None:
            return False
        persons, ids = arrays.pop("persons", None), arrays.get("ids")
        # The ids must ascend, one person each, for `_persons_of`'s searchsorted.
        if persons is None or ids is None or persons.shape != ids.shape or not np.all(ids[1:] > ids[:-1]):
            return False
        try:
            self.index.restore(arrays)
        except GalleryError as exc:  # a snapshot of another index layout (an older facegate)
            _LOG.warning("index snapshot not usable (%s); opening from the templates", exc)
            return False
        self._template_ids, self._template_persons = ids.copy(), persons
        self.opened_from = "snapshot"
        return True

    def _save_snapshot(self, stamp: str) -> None:
        path = self._snapshot_path()
        index_snapshot.discard_files(path.parent)
        key = index_snapshot.write(path, self.model, stamp, {**self.index.export(), "persons": self._template_persons})
        if key is not None and not self.store.record_index_snapshot(self.model, stamp, key):
            path.unlink(missing_ok=True)  # the gallery changed meanwhile: this snapshot is stale

    @classmethod
    def open(
        cls, data_dir: Path, kek: bytes, model: str, dim: int, threshold: float | ThresholdPolicy,
        create: bool = False, snapshot: bool = True,
    ) -> Gallery:
        store = GalleryStore.open(data_dir, kek, create=create)
        try:
            return cls(store, model, dim, threshold, snapshot)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _follow_size(self) -> None:
        """The 1:N threshold for the gallery as it is now (at open and after every change)."""
        self.threshold, self.threshold_fmr = self.policy.identify(self.templates)
        self.persons = len(np.unique(self._template_persons))

    @property
    def templates(self) -> int:
        """Templates of this gallery's model: the N the 1:N threshold is derived from."""
        return len(self._template_ids)

    def __len__(self) -> int:
        """Number of people with at least one template of this gallery's model."""
        return self.persons

    def _persons_of(self, template_ids: list[int]) -> list[int]:
        rows = np.searchsorted(self._template_ids, template_ids)
        return self._template_persons[rows].tolist()

    def _name(self, person_id: int) -> str:
        if person_id not in self._names:
            record = self.store.person(person_id)
            self._names[person_id] = record.profile.name if record is not None else f"#{person_id}"
        return self._names[person_id]

    def person(self, person_id: int) -> PersonRecord | None:
        """One person's record (profile, uid) by gallery id; None when they were removed."""
        return self.store.person(person_id)

    def credentials(self) -> CredentialIndex:
        """Cards and PIN holders (edge/gallery/credential_index.py), every profile decrypted on
        first use: a gallery behind face-only doors never pays for it."""
        if self._credentials is None:
            self._credentials = CredentialIndex(self.store.persons())
        return self._credentials

    def refresh_negatives(self) -> bool:
        """Reloads the negative templates when they changed in the database since they were
        loaded (`gallery reject-match` or `negatives --clear` in another process): one small read
        when they did not. True when reloaded."""
        if negative_templates.stamp(self.store) == self.negatives.stamp:
            return False
        self.negatives = negative_templates.load(self.store, self.model)
        return True

    def identify(self, embedding: np.ndarray, k: int = 5) -> Match:
        best: dict[int, float] = {}
        found = self.index.search(embedding, k * _TEMPLATES_PER_CANDIDATE)
        for person_id, (_template_id, score) in zip(self._persons_of([t for t, _ in found]), found, strict=True):
            best[person_id] = max(score, best.get(person_id, -1.0))
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:k]
        candidates = tuple(Candidate(self._name(pid), pid, score) for pid, score in ranked)
        if not candidates:
            return Match(None, float("nan"), self.threshold, ())
        named, refused = self.negatives.first_clear([(c.person_id, c.score) for c in candidates], embedding, self.threshold, self.negative_margin)
        top = candidates[0 if named is None else named]
        rejected = tuple(candidates[i] for i in refused)
        return Match(None if named is None else top.person, top.score, self.threshold, candidates, rejected)

    def verify(self, name: str, embedding: np.ndarray) -> Match:
        """1:1 — the probe against one person's templates only."""
        record = self.store.find(name)
        if record is None:
            return Match(None, float("nan"), self.verify_threshold, ())
        self._names[record.id] = record.profile.name
        return self.verify_id(record.id, embedding)

    def verify_id(self, person_id: int, embedding: np.ndarray) -> Match:
        """1:1 against one person by gallery id (a card or PIN chose them), at `verify_threshold`."""
        vectors = [t.embedding for t in self.store.person_templates(person_id, self.model)]
        if not vectors:
            return Match(None, float("nan"), self.verify_threshold, ())
        score = float(np.max(np.stack(vectors) @ embedding))
        candidate = Candidate(self._name(person_id), person_id, score)
        named, refused = self.negatives.first_clear([(person_id, score)], embedding, self.verify_threshold, self.negative_margin)
        rejected = (candidate,) if refused else ()
        return Match(candidate.person if named is not None else None, score, self.verify_threshold, (candidate,), rejected)

    def enroll(self, profile: PersonProfile, embeddings: Sequence[np.ndarray], qualities: Sequence[float]) -> PersonRecord:
        # Refused before anything is written when the grown gallery would need a threshold the
        # calibration cannot give (GalleryError: the enroll verbs report it like any other).
        try:
            self.policy.identify(self.templates + len(embeddings))
        except ConfigError as exc:
            raise GalleryError(f"not enrolled: {exc}") from exc
        if profile.cards:
            existing = self.store.find(profile.name)
            self.credentials().refuse_taken_cards(profile, existing.id if existing else None)
        record = self.store.enroll(profile, embeddings, qualities, self.model)
        if self._credentials is not None:
            self._credentials.add(record)
        self._names[record.id] = record.profile.name
        self._index_new_templates(record.id)
        self._follow_size()
        return record

    def remove(self, name: str) -> bool:
        record = self.store.find(name)
        if record is None or not self.store.remove(name):
            return False
        theirs = self._template_persons == record.id
        self.index.remove(self._template_ids[theirs].tolist())
        self._template_ids, self._template_persons = self._template_ids[~theirs], self._template_persons[~theirs]
        self._names.pop(record.id, None)
        if self._credentials is not None:
            self._credentials.remove(record.id)
        self.negatives.drop(record.id)
        self._follow_size()
        return True

    def _index_new_templates(self, person_id: int) -> None:
        """Adds the person's templates the index does not hold yet (an enroll may add to an
        existing person, whose earlier templates are already indexed)."""
        known = set(self._template_ids[self._template_persons == person_id].tolist())
        new = [t for t in self.store.person_templates(person_id, self.model) if t.id not in known]
        if not new:
            return
        ids = np.array([t.id for t in new], dtype=np.int64)
        self.index.add(ids, np.stack([t.embedding for t in new]).astype(np.float32))
        # New ids are larger than every indexed one (AUTOINCREMENT), so appending keeps the order.
        self._template_ids = np.concatenate([self._template_ids, ids])
        self._template_persons = np.concatenate([self._template_persons, np.full(len(ids), person_id, dtype=np.int64)])
