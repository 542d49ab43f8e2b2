"""Gallery records: the typed values the store hands out, and their sealed on-disk form.

Profiles are JSON, padded to a multiple of `_PROFILE_PAD` bytes before sealing so that the
ciphertext length does not give away the length of a name. Templates are the float32
embedding (little-endian) followed by the float32 quality score. Every sealed value has its own
AAD (see `edge.gallery.crypto`): the table, the schema version and the uids of the row and its person.
"""

from __future__ import annotations

import json
import math
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import GalleryError
from edge.gallery.crypto import NONCE_BYTES, aad
from edge.names import check_person_name, stored_name

SCHEMA_VERSION = 1
UID_CHARS = 32  # hex characters; fixed, see the AAD note below
NAME_TAG_PURPOSE = b"facegate/name-tag/v1"
_PROFILE_PAD = 128
_FLOAT = np.dtype("<f4")


def _optional_int(name: str, value: object, minimum: int | None = None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise GalleryError(f"profile.{name}: must be an integer or None (got {value!r})")
    if minimum is not None and value < minimum:
        raise GalleryError(f"profile.{name}: must be >= {minimum} (got {value})")


@dataclass(frozen=True, slots=True)
class PersonProfile:
    """Everything personal about an enrolled person; stored only inside `sealed_profile`."""

    name: str
    groups: tuple[str, ...] = ()
    consent: bool = True
    consent_at: int | None = None  # unix seconds
    consent_text: str = ""  # what the person agreed to, verbatim
    retention_days: int | None = None
    valid_from: int | None = None  # unix seconds; access outside [valid_from, valid_until] is denied
    valid_until: int | None = None
    created_by: str = ""  # operator or request id that enrolled the person
    cards: tuple[int, ...] = ()  # card ids (edge.access.credentials.card_id); credentials, sealed like the name
    pin_hash: str = ""  # edge.gallery.pins.hash_pin of the person's PIN (salted scrypt); "" = no PIN

    def __post_init__(self) -> None:
        # Every way a name comes in builds a profile: the one check is here (edge/names.py).
        object.__setattr__(self, "name", check_person_name(self.name))
        if isinstance(self.groups, str) or not all(isinstance(g, str) and g for g in self.groups):
            raise GalleryError(f"profile.groups: must be a sequence of non-empty strings (got {self.groups!r})")
        object.__setattr__(self, "groups", tuple(self.groups))
        if isinstance(self.cards, (str, bytes)) or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32 for c in self.cards):
            raise GalleryError(f"profile.cards: must be card ids, integers in [0, 2**32) (got {self.cards!r})")
        object.__setattr__(self, "cards", tuple(dict.fromkeys(self.cards)))
        if not isinstance(self.pin_hash, str) or (self.pin_hash and not self.pin_hash.startswith("scrypt$")):
            raise GalleryError("profile.pin_hash: must be a hash from edge.gallery.pins.hash_pin, never a PIN")
        _optional_int("consent_at", self.consent_at, 0)
        _optional_int("retention_days", self.retention_days, 1)
        _optional_int("valid_from", self.valid_from, 0)
        _optional_int("valid_until", self.valid_until, 0)
        if self.valid_from is not None and self.valid_until is not None and self.valid_from > self.valid_until:
            raise GalleryError(f"profile.valid_from: must not be after valid_until ({self.valid_from} > {self.valid_until})")


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: int
    uid: str
    profile: PersonProfile
    n_templates: int
    created: int
    updated: int


@dataclass(frozen=True, slots=True, eq=False)
class TemplateRecord:
    id: int
    person_id: int
    model: str
    embedding: np.ndarray = field(repr=False)
    quality: float


def normalise_name(name: str) -> str:
    """The form names are compared in: NFKC, casefolded, runs of whitespace as one space."""
    normal = " ".join(unicodedata.normalize("NFKC", name).casefold().split())
    if not normal:
        raise GalleryError("person name is empty")
    return normal


def merge_profiles(old: PersonProfile, new: PersonProfile) -> PersonProfile:
    """A second enrollment of the same person adds to what is known, never silently erases it.

    Groups are the union (old order first). Other fields take the new value only where the new
    profile sets one; consent travels as a whole (given, time, text) and is replaced only when the
    new enrollment records when or to what the person consented. The stored display name stays.
    """
    defaults = PersonProfile(name=old.name)
    merged: dict[str, Any] = {}
    for f in fields(PersonProfile):
        if f.name in ("name", "groups", "cards", "consent", "consent_at", "consent_text"):
            continue
        value = getattr(new, f.name)
        merged[f.name] = getattr(old, f.name) if value == getattr(defaults, f.name) else value
    consent_from = new if (new.consent_at is not None or new.consent_text) else old
    return PersonProfile(
        name=old.name,
        groups=tuple(dict.fromkeys(old.groups + new.groups)),
        cards=old.cards + new.cards,
        consent=consent_from.consent,
        consent_at=consent_from.consent_at,
        consent_text=consent_from.consent_text,
        **merged,
    )


def profile_to_bytes(profile: PersonProfile) -> bytes:
    doc = {
        "name": profile.name,
        "groups": list(profile.groups),
        "consent": {"given": profile.consent, "at": profile.consent_at, "text": profile.consent_text},
        "retention_days": profile.retention_days,
        "valid_from": profile.valid_from,
        "valid_until": profile.valid_until,
        "created_by": profile.created_by,
        "cards": list(profile.cards),
        "pin_hash": profile.pin_hash,
    }
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % _PROFILE_PAD)  # JSON ignores trailing whitespace


def profile_from_bytes(data: bytes) -> PersonProfile:
    doc = json.loads(data.decode("utf-8"))
    consent = doc["consent"]
    return PersonProfile(
        name=stored_name(doc["name"]),  # sealed before names were checked, it still opens
        groups=tuple(doc["groups"]),
        consent=consent["given"],
        consent_at=consent["at"],
        consent_text=consent["text"],
        retention_days=doc["retention_days"],
        valid_from=doc["valid_from"],
        valid_until=doc["valid_until"],
        created_by=doc["created_by"],
        cards=tuple(doc.get("cards", ())),  # profiles sealed before cards existed have neither key
        pin_hash=doc.get("pin_hash", ""),
    )


def template_to_bytes(embedding: np.ndarray, quality: float) -> bytes:
    return embedding.astype(_FLOAT, copy=False).tobytes() + np.array([quality], dtype=_FLOAT).tobytes()


def template_from_bytes(data: bytes) -> tuple[np.ndarray, float]:
    values = np.frombuffer(data, dtype=_FLOAT)
    return values[:-1].astype(np.float32), float(values[-1])


def check_templates(embeddings: list[np.ndarray], qualities: list[float]) -> list[np.ndarray]:
    """Validated float32 vectors, all of one dimension; GalleryError naming the bad argument."""
    if not embeddings:
        raise GalleryError("enroll: no embeddings given; a person needs at least one template")
    if len(embeddings) != len(qualities):
        raise GalleryError(f"enroll: {len(embeddings)} embeddings but {len(qualities)} qualities; give one quality per embedding")
    vectors = [np.asarray(e, dtype=np.float32) for e in embeddings]
    dim = vectors[0].size
    for i, (v, q) in enumerate(zip(vectors, qualities, strict=True)):
        if v.ndim != 1 or v.size == 0 or v.size != dim:
            raise GalleryError(f"enroll: embeddings[{i}] has shape {v.shape}; all must be 1-D with {dim} values")
        if not np.all(np.isfinite(v)):
            raise GalleryError(f"enroll: embeddings[{i}] contains NaN or infinity")
        if not isinstance(q, (int, float, np.floating)) or not math.isfinite(float(q)):
            raise GalleryError(f"enroll: qualities[{i}] must be a finite number (got {q!r})")
    return vectors


# Rows decrypted per block at open: 1,024 × 512 floats (2 MB) stay in the cache until the index
# has encoded them. A whole-gallery float32 array (100k × 512: 200 MB) cost 0.4 s of first-touch
# page faults in a fresh process, and held every template in clear at once.
_OPEN_BLOCK_ROWS = 1_024


@dataclass(frozen=True, slots=True, eq=False)
class TemplateBlock:
    """Consecutive decrypted templates: `vectors` is a view of a buffer that the next block
    overwrites, so a consumer copies what it keeps."""

    ids: np.ndarray  # (m,) int64 template ids, ascending
    person_ids: np.ndarray  # (m,) int64
    vectors: np.ndarray  # (m, dim) float32


@dataclass(frozen=True, slots=True, eq=False)
class LoadedTemplates:
    """What `GalleryStore.embedding_blocks` yields: `count` templates of `dim` floats, to be read
    from `blocks` while the store's read snapshot is open."""

    count: int
    dim: int
    fingerprint: str  # `edge.index_snapshot.fingerprint` of the snapshot being read
    blocks: Iterator[TemplateBlock]


def decrypt_template_blocks(
    rows: Iterable[tuple[int, int, bytes, bytes, bytes, bytes]],
    n: int,
    dim: int,
    device_key: bytes,
    model: str,
    where: str,
    remedy: str,
    block: int = _OPEN_BLOCK_ROWS,
) -> Iterator[TemplateBlock]:
    """`n` rows of (template id, person id, person uid, wrapped person key, template uid, sealed
    template) as decrypted blocks of `block` rows; the templates of one person come in a run
    (rows in template id order: a person's templates mostly have consecutive ids).

    The gallery's open-time hot path, written as one flat loop: with one template per person it
    runs once per person, and every Python operation in it costs ~1 % of the open time. Each
    person key is unwrapped when its person's run starts and lives only until the next run
    begins (one AESGCM at a time: each holds ~2 KB of OpenSSL state). A record that fails
    authentication raises GalleryError naming the person key or the template.
    """
    # A plaintext is the vector plus one trailing quality float. Row i of a block is decrypted to
    # offset i*dim, so its quality lands on the first float of row i+1 and is overwritten by the
    # next decryption (the block's last one lands in the spare float): rows come out contiguous.
    flat = np.empty(min(n, block) * dim + 1, dtype=_FLOAT)
    out = memoryview(flat).cast("B")
    row_bytes, plain_bytes = _FLOAT.itemsize * dim, _FLOAT.itemsize * (dim + 1)
    device = AESGCM(device_key)
    key_head, model_head = _PERSON_KEY_HEAD, aad("facegate", "templates", SCHEMA_VERSION, model)
    template_id = person_id = current = -1
    aead, head, start, total = device, b"", 0, 0
    ids: list[int] = []
    person_ids: list[int] = []
    try:
        for template_id, person_id, person_uid, wrapped, uid, sealed in rows:
            if person_id != current:
                current = -1  # until the key is unwrapped, a failure is the key's
                aead = AESGCM(device.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_head + person_uid))
                head, current = model_head + person_uid, person_id
            aead.decrypt_into(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], head + uid, out[start : start + plain_bytes])
            start += row_bytes
            ids.append(template_id)
            person_ids.append(person_id)
            if len(ids) == block:
                total += block
                yield TemplateBlock(np.array(ids, dtype=np.int64), np.array(person_ids, dtype=np.int64), flat[: block * dim].reshape(block, dim))
                ids, person_ids, start = [], [], 0
    except (InvalidTag, ValueError, IndexError) as exc:  # ValueError: a blob or key of another length
        what = f"person {person_id} key" if current == -1 else f"template {template_id} (person {person_id})"
        raise GalleryError(f"{where}: {what} fails authentication: it was altered, truncated, or copied from another record; {remedy}") from exc
    total += len(ids)
    if total != n:  # the join drops templates whose person row is missing (one read snapshot: nothing else)
        raise GalleryError(f"{where}: {n - total} templates refer to persons that do not exist; run an integrity check")
    if ids:
        yield TemplateBlock(np.array(ids, dtype=np.int64), np.array(person_ids, dtype=np.int64), flat[: len(ids) * dim].reshape(len(ids), dim))


def template_dim(sealed_len: int, overhead: int) -> int:
    """The embedding dimension of a sealed template of `sealed_len` bytes."""
    return (sealed_len - overhead) // _FLOAT.itemsize - 1


def check_model(model: str) -> str:
    if not isinstance(model, str) or not model or len(model) > 64 or not model.isprintable():
        raise GalleryError(f"model: must be a printable embedder name of 1..64 characters (got {model!r})")
    return model


def new_uid() -> str:
    """A random row uid: never derived from a name, so it says nothing about the person."""
    return secrets.token_hex(UID_CHARS // 2)


def _uid(uid: str | bytes) -> bytes:
    return uid if isinstance(uid, bytes) else uid.encode()


# AADs end in one or two uids appended raw: every earlier part is length-prefixed and uids have a
# fixed length (UID_CHARS), so the encoding stays unambiguous, and the open path, which builds
# one AAD per person and per template, is a single concatenation. A uid of another length gives
# another AAD and fails authentication, which is right: the store never writes one.
_PERSON_KEY_HEAD = aad("facegate", "person-key", SCHEMA_VERSION)
_PROFILE_HEAD = aad("facegate", "persons", SCHEMA_VERSION)


def device_key_aad(kek_id: str, dk_version: int) -> bytes:
    return aad("facegate", "device-key", SCHEMA_VERSION, kek_id, dk_version)


def person_key_aad(person_uid: str | bytes) -> bytes:
    return _PERSON_KEY_HEAD + _uid(person_uid)


def profile_aad(person_uid: str | bytes) -> bytes:
    return _PROFILE_HEAD + _uid(person_uid)


def template_aad_heads(model: str) -> Callable[[str | bytes], bytes]:
    """person uid → AAD head of that person's `model` templates; `head + template uid` is the
    AAD of each. Binding the person uid means a template row moved to another person fails
    authentication, even if whoever moved it also copied that person's wrapped key."""
    model_head = aad("facegate", "templates", SCHEMA_VERSION, model)
    return lambda person_uid: model_head + _uid(person_uid)


def template_aad_head(model: str, person_uid: str | bytes) -> bytes:
    return template_aad_heads(model)(person_uid)


class TemplateKeys:
    """person id → (AEAD under that person's key, AAD head of its `model` templates).

    One instance per read call. Each person key is unwrapped once and kept as 32 bytes; only the
    latest person's AESGCM object stays alive, because each holds ~2 KB of OpenSSL state: one per
    person would cost 230 MB and 0.4 s at 100k persons. Templates are read in id order, and a
    person's templates mostly have consecutive ids, so the AESGCM is rarely rebuilt.
    """

    def __init__(self, device_key: bytes, model: str, lookup: Callable[[int], tuple[str | bytes, bytes] | None], where: str) -> None:
        self._dk = AESGCM(device_key)
        self._heads = template_aad_heads(model)
        self._lookup = lookup  # person id → (uid, wrapped key), None if no such person
        self._where = where
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._current_id = -1
        self._current: tuple[AESGCM, bytes] | None = None

    def __call__(self, person_id: int) -> tuple[AESGCM, bytes]:
        if person_id == self._current_id and self._current is not None:
            return self._current
        entry = self._keys.get(person_id)
        if entry is None:
            entry = self._keys[person_id] = self._unwrap(person_id)
        self._current_id, self._current = person_id, (AESGCM(entry[0]), entry[1])
        return self._current

    def _unwrap(self, person_id: int) -> tuple[bytes, bytes]:
        found = self._lookup(person_id)
        if found is None:
            raise GalleryError(f"{self._where}: templates refer to person {person_id}, which does not exist; run an integrity check")
        uid, wrapped = found
        try:
            pk = self._dk.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], person_key_aad(uid))
        except (InvalidTag, ValueError) as exc:
            raise GalleryError(
                f"{self._where}: person {person_id} key fails authentication; remove and re-enroll the person, or restore the gallery from a backup"
            ) from exc
        return pk, self._heads(uid)
