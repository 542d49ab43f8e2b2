"""An encrypted copy of a large gallery's in-memory index, so that a restart skips decrypting
every template one by one.

A cold open unwraps a person key and decrypts a template per row: ~10 µs each, 1.0–1.7 s for
100k templates on one core of the machines measured (bench/gallery.py). The index it builds
(ids, int8 rows, sign codes: 57 MB at 100k × 512) is written once, after a cold open, to
`<data dir>/index-<model hash>.snap`, sealed in 8 MiB AES-256-GCM chunks under a fresh random
key. The next open with an unchanged gallery reads it back in ~0.1 s.

What keeps it honest:
- The snapshot key lives only in the gallery database, wrapped by the device key, in `meta`
  under `index_snapshot:<model>` together with the gallery fingerprint it was taken at (count,
  largest and sum of the model's template ids: ids are never reused, so any enrollment or
  removal changes it). A snapshot whose fingerprint is not the gallery's current one is never
  read.
- Erasure: a trigger deletes every snapshot key in the transaction that deletes any template
  (removal, hub replacement), with secure_delete and the WAL checkpoint that follow every
  erasure. A snapshot file that outlives its key (a crash before the unlink, a copy on flash)
  is ciphertext whose key is gone: crypto-erased like the person keys. `keys rotate` drops the
  snapshot keys too.
- Every chunk's associated data binds the file header, the array and the chunk's place; a
  missing, truncated, altered or foreign file is refused as a whole (logged) and the open
  falls back to the cold path. Nothing is ever half-loaded.
- Written to a temporary file, fsynced, renamed; the key is recorded after the rename, in a
  write transaction that first re-checks the fingerprint (another process may have enrolled
  since the open). A full disk or a read-only data dir costs a warning, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import struct
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import CryptoError, GalleryError
from edge.gallery import crypto

_LOG = logging.getLogger(__name__)
MAGIC = b"facegate-index-snapshot/1\n"
# Chunks of 8 MiB: each is one AES-GCM call (~4 ms), far below GCM's per-key limits.
CHUNK_BYTES = 8 << 20
# Below this many templates a cold open takes < 0.2 s; a snapshot would only add a file.
MIN_TEMPLATES = 10_000
_META_PREFIX = "index_snapshot:"
_DROP_KEYS = f"DELETE FROM meta WHERE key LIKE '{_META_PREFIX}%'"
_TRIGGER = f"CREATE TRIGGER IF NOT EXISTS index_snapshot_erase AFTER DELETE ON templates BEGIN {_DROP_KEYS}; END"


def fingerprint(db: sqlite3.Connection, model: str) -> str:
    """The state of `model`'s templates: count, largest id, sum of ids (ids are never reused)."""
    count, largest, total = db.execute("SELECT count(*), coalesce(max(id), 0), coalesce(sum(id), 0) FROM templates WHERE model=?", (model,)).fetchone()
    return f"{count}:{largest}:{total}"


def file_for(data_dir: Path, model: str) -> Path:
    return data_dir / f"index-{hashlib.sha256(model.encode()).hexdigest()[:16]}.snap"


def _key_aad(model: str, dk_version: int, stamp: str) -> bytes:
    return crypto.aad("facegate", "index-snapshot-key", model, dk_version, stamp)


def stored_key(db: sqlite3.Connection, device: AESGCM, dk_version: int, model: str, stamp: str) -> bytes | None:
    """The snapshot key of `model` if one is recorded at fingerprint `stamp`, else None."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (_META_PREFIX + model,)).fetchone()
    if row is None:
        return None
    try:
        entry = json.loads(row[0])
        if entry["fingerprint"] != stamp:
            return None
        return crypto.unwrap_key(device, bytes.fromhex(entry["key"]), _key_aad(model, dk_version, entry["fingerprint"]), "index snapshot key")
    except (ValueError, KeyError, TypeError, CryptoError) as exc:
        _LOG.warning("index snapshot key for %s unusable (%s); opening from the templates", model, exc)
        return None


def record_key(db: sqlite3.Connection, device: AESGCM, dk_version: int, model: str, stamp: str, key: bytes) -> bool:
    """Records `key` for a snapshot taken at fingerprint `stamp`, inside the caller's write
    transaction; False (nothing recorded) when the gallery has changed since."""
    db.execute(_TRIGGER)
    if fingerprint(db, model) != stamp:
        return False
    wrapped = crypto.wrap_key(device, key, _key_aad(model, dk_version, stamp))
    db.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (_META_PREFIX + model, json.dumps({"fingerprint": stamp, "key": wrapped.hex()})),
    )
    return True


def drop_keys(db: sqlite3.Connection) -> None:
    """Every snapshot key, gone (inside the caller's write transaction)."""
    db.execute(_DROP_KEYS)


def has_keys(db: sqlite3.Connection) -> bool:
    return db.execute(f"SELECT 1 FROM meta WHERE key LIKE '{_META_PREFIX}%' LIMIT 1").fetchone() is not None


def files(data_dir: Path) -> list[Path]:
    """Snapshot files in `data_dir`, finished or left half-written by a crash."""
    return sorted(data_dir.glob("index-*.snap*"))


def discard_files(data_dir: Path) -> None:
    for path in files(data_dir):
        path.unlink(missing_ok=True)


def _chunk_aad(header_digest: bytes, name: str, index: int, count: int) -> bytes:
    return crypto.aad(header_digest, name, index, count)


def write(path: Path, model: str, stamp: str, arrays: dict[str, np.ndarray]) -> bytes | None:
    """Seals `arrays` into `path` under a fresh key and returns the key; None (logged, no file
    left behind) when the file cannot be written."""
    key = crypto.new_key()
    aead = AESGCM(key)
    spec = [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()]
    header = json.dumps({"model": model, "fingerprint": stamp, "chunk": CHUNK_BYTES, "arrays": spec}).encode()
    digest = hashlib.sha256(MAGIC + header).digest()
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + struct.pack(">I", len(header)) + header)
            for name, array in arrays.items():
                raw = memoryview(np.ascontiguousarray(array)).cast("B")
                count = max(1, -(-len(raw) // CHUNK_BYTES))
                for index in range(count):
                    nonce = os.urandom(crypto.NONCE_BYTES)
                    piece = raw[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
                    out.write(nonce + aead.encrypt(nonce, piece, _chunk_aad(digest, name, index, count)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        crypto.fsync_dir(path.parent)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        _LOG.warning("index snapshot not written to %s (%s); the next open decrypts every template again", path, exc)
        return None
    return key


def read(path: Path, model: str, stamp: str, key: bytes) -> dict[str, np.ndarray] | None:
    """The arrays sealed in `path`, or None (logged) when the file is missing or is not the
    snapshot of this model at this fingerprint under this key, intact."""
    try:
        with open(path, "rb") as source:
            return _read(source, model, stamp, AESGCM(key))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, InvalidTag, GalleryError, struct.error) as exc:
        _LOG.warning("index snapshot %s refused (%s); opening from the templates", path, exc or type(exc).__name__)
        return None


def _read(source, model: str, stamp: str, aead: AESGCM) -> dict[str, np.ndarray]:
    if source.read(len(MAGIC)) != MAGIC:
        raise GalleryError("not an index snapshot")
    (length,) = struct.unpack(">I", source.read(4))
    header = source.read(length)
    meta = json.loads(header)
    if meta["model"] != model or meta["fingerprint"] != stamp or meta["chunk"] != CHUNK_BYTES:
        raise GalleryError("taken of another model or gallery state")
    digest = hashlib.sha256(MAGIC + header).digest()
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape in meta["arrays"]:
        array = np.empty(shape, dtype=np.dtype(dtype))
        raw = memoryview(array).cast("B") if array.nbytes else memoryview(bytearray(0))
        count = max(1, -(-len(raw) // CHUNK_BYTES))
        for index in range(count):
            size = min(CHUNK_BYTES, len(raw) - index * CHUNK_BYTES)
            sealed = source.read(crypto.NONCE_BYTES + size + 16)
            if len(sealed) != crypto.NONCE_BYTES + size + 16:
                raise GalleryError("truncated")
            view = memoryview(sealed)
            aead.decrypt_into(view[: crypto.NONCE_BYTES], view[crypto.NONCE_BYTES :], _chunk_aad(digest, name, index, count), raw[index * CHUNK_BYTES : index * CHUNK_BYTES + size])
        arrays[name] = array
    if source.read(1):
        raise GalleryError("trailing bytes")
    return arrays
