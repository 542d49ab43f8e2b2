"""The gallery's SQLite file: schema, connection settings, creation, and the key check at open.

Kept apart from `edge.gallery.store` so the store reads as the list of gallery operations; this
module is everything that happens before the first one, plus the two hub-sync bookkeeping tables
(created by the first applied bundle, `edge.gallery.sync_apply`) and their reading.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import CryptoError, GalleryError, storage_advice
from edge.gallery.crypto import kek_id, new_key, unwrap_key, wrap_key
from edge.gallery.records import SCHEMA_VERSION, device_key_aad

GALLERY_FILE = "gallery.db"
# 8 KiB pages hold three 512-d templates (2,080 sealed bytes each) where 4 KiB pages hold one:
# the file is a third smaller and the open-time scan reads a third less.
PAGE_SIZE = 8192
SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per KEK that can open the gallery; two only while a KEK rotation is under way.
    (
        "CREATE TABLE device_keys (kek_id TEXT PRIMARY KEY, dk_version INTEGER NOT NULL,"
        " wrapped_dk BLOB NOT NULL, created INTEGER NOT NULL)"
    ),
    # AUTOINCREMENT: ids are never reused, so an audit record or index entry naming a removed
    # person can never come to mean somebody enrolled later.
    (
        "CREATE TABLE persons (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,"
        " name_tag BLOB NOT NULL UNIQUE, wrapped_key BLOB NOT NULL, sealed_profile BLOB NOT NULL,"
        " created INTEGER NOT NULL, updated INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE templates (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL UNIQUE,"
        " person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE, model TEXT NOT NULL,"
        " sealed BLOB NOT NULL, created INTEGER NOT NULL)"
    ),
    "CREATE INDEX templates_by_model ON templates(model, id)",
    "CREATE INDEX templates_by_person ON templates(person_id, model)",
)
# Hub sync: which scope (`device:<id>` / `group:<g>`) brought whom, and the last sequence applied per scope.
SYNC_TABLES = (
    "CREATE TABLE IF NOT EXISTS sync_scopes (scope TEXT PRIMARY KEY, seq INTEGER NOT NULL, applied INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sync_members (scope TEXT NOT NULL, person_uid TEXT NOT NULL, PRIMARY KEY (scope, person_uid))",
)
# No personal plaintext may reach a temp file; secure_delete zeroes freed space in the file.
_PRAGMAS = ("synchronous=FULL", "secure_delete=ON", "temp_store=MEMORY", "foreign_keys=ON")


def now() -> int:
    return int(time.time())


def connect(path: Path, page_size: int | None = None, pragmas: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with the gallery's pragmas."""
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None, timeout=10.0)
    if not pragmas:
        return db
    if page_size is not None:
        db.execute(f"PRAGMA page_size={page_size}")  # effective only before the first write
    if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
        db.close()
        raise GalleryError(f"{path}: cannot switch to WAL journaling; is the file system read-only or a network share?")
    for pragma in _PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    return db


def initialise(path: Path, kek: bytes) -> None:
    """Creates the file (0600, before SQLite does: its -wal and -shm inherit the mode), the
    schema and a new device key wrapped by `kek`, in one transaction."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass  # left empty by a crash before the schema committed, or another process is creating it
    db = connect(path, page_size=PAGE_SIZE)
    try:
        db.execute("BEGIN IMMEDIATE")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables:
            db.execute("ROLLBACK")
            if "meta" not in tables:
                raise GalleryError(f"{path}: an SQLite file that is not a facegate gallery; move it away or use another data dir")
            return  # another process initialised it first
        for statement in SCHEMA:
            db.execute(statement)
        created = now()
        db.execute("INSERT INTO meta VALUES ('schema_version', ?), ('created', ?)", (str(SCHEMA_VERSION), str(created)))
        kid = kek_id(kek)
        db.execute("INSERT INTO device_keys VALUES (?, 1, ?, ?)", (kid, wrap_key(kek, new_key(), device_key_aad(kid, 1)), created))
        db.execute("COMMIT")
    finally:
        db.close()


def probe(path: Path, kek: bytes) -> bool:
    """False when there is no gallery yet; CryptoError for a wrong key; True when `kek` opens it.

    Only reads, with no pragma set: a wrong key changes no byte of the gallery, and closing
    removes the -wal/-shm files the connection created. (A read-only connection would leave
    them behind; its one advantage, not checkpointing a WAL left by a crash, is moot: that
    checkpoint writes committed data the next successful open writes anyway.)
    """
    if not path.exists() or path.stat().st_size == 0:
        return False
    db = connect(path, pragmas=False)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
            return False
        device_key(db, path, {kek_id(kek): kek})
        return True
    except sqlite3.DatabaseError as exc:
        raise GalleryError(f"{path}: not a readable SQLite gallery ({exc}); {storage_advice(path, 'restore it from a backup')}") from exc
    finally:
        db.close()


def device_key(db: sqlite3.Connection, path: Path, keks: dict[str, bytes]) -> tuple[bytes, int, str]:
    """(DK, its version, the kek id that unwrapped it); CryptoError naming both kek ids."""
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if version is None or int(version[0]) != SCHEMA_VERSION:
        found = version[0] if version else "none"
        raise GalleryError(f"{path}: gallery schema version {found}, this facegate reads {SCHEMA_VERSION}; use a matching facegate release")
    rows = db.execute("SELECT kek_id, dk_version, wrapped_dk FROM device_keys ORDER BY created").fetchall()
    for kid, dk_version, wrapped in rows:
        if kid in keks:
            try:
                return unwrap_key(keks[kid], wrapped, device_key_aad(kid, dk_version), f"{path}: device key for kek id {kid}"), dk_version, kid
            except CryptoError as exc:
                raise CryptoError(f"{exc}; the gallery file was altered or is corrupt: restore it from a backup") from exc
    raise CryptoError(
        f"{path}: the key file does not unwrap this gallery's device key (gallery kek id "
        f"{', '.join(r[0] for r in rows) or 'none'}, key file kek id {', '.join(keks)}); "
        f"use the key file this gallery was created or last rotated with"
    )


@dataclass(frozen=True, slots=True)
class SyncState:
    version: int  # bundles applied, ever
    scopes: dict[str, int]  # scope → last sequence applied


def ensure_sync_tables(db: sqlite3.Connection) -> None:
    for statement in SYNC_TABLES:
        db.execute(statement)


def sync_state(db: sqlite3.Connection) -> SyncState:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    row = db.execute("SELECT value FROM meta WHERE key='gallery_version'").fetchone()
    scopes = dict(db.execute("SELECT scope, seq FROM sync_scopes").fetchall()) if "sync_scopes" in tables else {}
    return SyncState(int(row[0]) if row else 0, scopes)
