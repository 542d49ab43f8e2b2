"""The hub's state: devices, groups, persons (encrypted at rest), bundles, acks, erasures, audit.

One schema for SQLite and PostgreSQL (`sync.hub.db`). Persons are sealed like the device
gallery (`edge/gallery/crypto.py`): each person has a random key, stored only wrapped by the hub's KEK
(`[hub] key_file`); it seals the person's wire document (profile + templates). Names are found
through a keyed tag, never stored in clear. Erasing a person destroys its wrapped key and sealed
row (crypto-erase: backups of the database hold noise) and leaves only the uid, which the
bundles then carry as an erase until every device has confirmed it.

Audit records are stored per (device, seq), in order and once: each device's last accepted
(seq, hash) lives in its device row and is read and advanced in the same transaction as the
insert, so two hub instances sharing the ingest (MQTT shared subscriptions) never both accept
the same record or skip one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.audit.records import GENESIS, AuditRecord
from edge.errors import FacegateError
from edge.gallery import crypto
from edge.gallery.changes import SyncPerson
from edge.gallery.crypto import aad, derive_key, keyed_tag, new_key, seal, unseal, unwrap_key, wrap_key
from edge.gallery.records import normalise_name
from edge.names import stored_name
from sync import protocol
from sync.bundle import PERSON, person_doc, person_from_doc
from sync.hub import versions
from sync.hub.db import HubDb
from sync.hub.ingest import AuditIngest, IngestResult

_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, sign_pub TEXT NOT NULL, seal_pub TEXT NOT NULL, groups_json TEXT NOT NULL,"
     " added BIGINT NOT NULL, audit_seq BIGINT NOT NULL, audit_hash TEXT NOT NULL, status_json TEXT NOT NULL, last_seen BIGINT NOT NULL,"
     " enroll_groups_json TEXT NOT NULL DEFAULT '[]')"),
    "CREATE TABLE IF NOT EXISTS hub_groups (name TEXT PRIMARY KEY, added BIGINT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS persons (uid TEXT PRIMARY KEY, name_tag BLOB, wrapped_key BLOB, sealed BLOB, groups_json TEXT NOT NULL,"
     " created BIGINT NOT NULL, erased BIGINT)"),
    "CREATE TABLE IF NOT EXISTS scopes (scope TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS bundles (scope TEXT NOT NULL, seq BIGINT NOT NULL, created BIGINT NOT NULL, persons BIGINT NOT NULL,"
     " erases_json TEXT NOT NULL, recipients_json TEXT NOT NULL, PRIMARY KEY (scope, seq))"),
    ("CREATE TABLE IF NOT EXISTS gallery_acks (device TEXT NOT NULL, scope TEXT NOT NULL, seq BIGINT NOT NULL, ok INTEGER NOT NULL,"
     " gallery_version BIGINT NOT NULL, error TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (device, scope, seq))"),
    ("CREATE TABLE IF NOT EXISTS erasures (uid TEXT NOT NULL, device TEXT NOT NULL, requested BIGINT NOT NULL, confirmed BIGINT,"
     " PRIMARY KEY (uid, device))"),
    ("CREATE TABLE IF NOT EXISTS audit (device TEXT NOT NULL, seq BIGINT NOT NULL, ts_us BIGINT NOT NULL, kind TEXT NOT NULL,"
     " body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, sig TEXT NOT NULL, person_uid TEXT, PRIMARY KEY (device, seq))"),
    "CREATE INDEX IF NOT EXISTS persons_name ON persons (name_tag)",  # add_person's duplicate-name check
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_us)",
    "CREATE INDEX IF NOT EXISTS audit_person ON audit (person_uid)",
    "CREATE TABLE IF NOT EXISTS alerts (at BIGINT NOT NULL, device TEXT NOT NULL, problem TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",  # kek_id: which KEK seals this database
)


class HubStoreError(FacegateError):
    """A hub store request names an unknown device, group or person, or conflicts with the state."""


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    sign_pub: str
    seal_pub: str
    groups: tuple[str, ...]
    added: int
    audit_seq: int
    status: dict[str, Any]
    last_seen: int
    enroll_groups: tuple[str, ...] = ()  # the most a person this device enrolls gets (docs/hub.md, review)


@dataclass(frozen=True, slots=True)
class PersonEntry:
    uid: str
    name: str  # "" once erased
    groups: tuple[str, ...]
    templates: int
    created: int
    erased: int | None


def _now() -> int:
    return int(time.time())


def person_uid_of(body: dict[str, Any]) -> str | None:
    uid = body.get("person_uid") or body.get("person") or body.get("uid")
    return uid if isinstance(uid, str) and len(uid) == 32 else None


class HubStore:
    def __init__(self, db: HubDb, kek: bytes) -> None:
        self.db = db
        self._kek = AESGCM(derive_key(kek, b"facegate-hub-person-keys"))
        self._name_key = derive_key(kek, b"facegate-hub-name-tags")
        with db.transaction():
            for statement in _SCHEMA:
                db.execute(statement)
            _add_enroll_groups_column(db)
            versions.migrate(db)
            _check_kek(db, kek)

    def use_kek(self, kek: bytes) -> None:
        """This store seals and opens with `kek` from now on (`sync.hub.kek.rotate_kek` re-wrapped everything)."""
        self._kek = AESGCM(derive_key(kek, b"facegate-hub-person-keys"))
        self._name_key = derive_key(kek, b"facegate-hub-name-tags")

    @classmethod
    def open(cls, url: str, data_dir: Path, kek: bytes) -> HubStore:
        return cls(HubDb(url, Path(data_dir) / "hub.db"), kek)

    def close(self) -> None:
        self.db.close()

    # -- devices and groups ------------------------------------------------------------------
    def add_device(self, device_id: str, sign_pub: str, seal_pub: str, groups: tuple[str, ...] = (), enroll_groups: tuple[str, ...] | None = None) -> None:
        """Registers (or re-keys) a device; `enroll_groups` caps the groups of the persons it
        uploads (None: a new device gets none, a re-added one keeps its own)."""
        protocol.check_id(device_id)
        for key in (sign_pub, seal_pub):
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise HubStoreError(f"device {device_id}: public keys are 64 hex characters (from `facegate sync identity` on the device)")
        with self.db.transaction():
            for g in (*groups, *(enroll_groups or ())):
                self.add_group(g)
            self.db.execute(
                "INSERT INTO devices (id, sign_pub, seal_pub, groups_json, added, audit_seq, audit_hash, status_json, last_seen, enroll_groups_json)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, '{}', 0, ?) ON CONFLICT (id) DO UPDATE SET sign_pub=excluded.sign_pub,"
                " seal_pub=excluded.seal_pub, groups_json=excluded.groups_json" + ("" if enroll_groups is None else ", enroll_groups_json=excluded.enroll_groups_json"),
                (device_id, sign_pub, seal_pub, json.dumps(sorted(set(groups))), _now(), GENESIS, json.dumps(sorted(set(enroll_groups or ())))),
            )

    def devices(self) -> list[Device]:
        rows = self.db.execute("SELECT id, sign_pub, seal_pub, groups_json, added, audit_seq, status_json, last_seen, enroll_groups_json FROM devices ORDER BY id")
        return [Device(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], _status(r[6]), r[7], tuple(json.loads(r[8]))) for r in rows]

    def device(self, device_id: str) -> Device:
        """One device by id (one row: every gallery ack and resync asks, so not a scan of the fleet)."""
        rows = self.db.execute("SELECT id, sign_pub, seal_pub, groups_json, added, audit_seq, status_json, last_seen, enroll_groups_json FROM devices WHERE id=?", (device_id,))
        if not rows:
            raise HubStoreError(f"no device {device_id!r} on this hub (admin device add)")
        r = rows[0]
        return Device(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], _status(r[6]), r[7], tuple(json.loads(r[8])))

    def add_group(self, name: str) -> None:
        protocol.check_id(name, "group")
        self.db.execute("INSERT INTO hub_groups VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, _now()))

    def groups(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM hub_groups ORDER BY name")]

    def assign(self, device_id: str, groups: tuple[str, ...]) -> None:
        """The device's groups become `groups` (its config's `[sync] groups` must match)."""
        with self.db.transaction():
            self.device(device_id)
            for g in groups:
                self.add_group(g)
            self.db.execute("UPDATE devices SET groups_json=? WHERE id=?", (json.dumps(sorted(set(groups))), device_id))

    def record_status(self, device_id: str, status: dict[str, Any]) -> None:
        self.db.execute("UPDATE devices SET status_json=?, last_seen=? WHERE id=?", (json.dumps(status), _now(), device_id))

    # -- persons, sealed at rest --------------------------------------------------------------
    def _tag(self, name: str) -> bytes:
        return keyed_tag(self._name_key, normalise_name(name))

    def add_person(self, person: SyncPerson) -> None:
        key = new_key()
        sealed = seal(AESGCM(key), json.dumps(person_doc(person)).encode(), aad("hub-person", person.uid))
        wrapped = wrap_key(self._kek, key, aad("hub-person-key", person.uid))
        with self.db.transaction():
            if self.db.execute("SELECT 1 FROM persons WHERE uid=?", (person.uid,)):
                raise HubStoreError(f"person {person.uid} already exists")
            if self.db.execute("SELECT 1 FROM persons WHERE name_tag=?", (self._tag(person.profile.name),)):
                raise HubStoreError(f"a person named {person.profile.name!r} already exists (remove or erase it first)")
            for g in person.profile.groups:
                self.add_group(g)
            self.db.execute(
                "INSERT INTO persons VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (person.uid, self._tag(person.profile.name), wrapped, sealed, json.dumps(sorted(person.profile.groups)), _now()),
            )
            versions.bump(self.db, person.uid, person.profile.groups, True)

    def _open_person(self, uid: str, wrapped: bytes, sealed: bytes) -> SyncPerson:
        key = unwrap_key(self._kek, wrapped, aad("hub-person-key", uid), f"hub person {uid} key")
        doc = json.loads(unseal(AESGCM(key), sealed, aad("hub-person", uid), f"hub person {uid}"))
        profile = doc.get("profile") if isinstance(doc, dict) else None
        if isinstance(profile, dict) and isinstance(profile.get("name"), str):
            # Sealed before names were checked (up to 1,024 characters then): still opens, and
            # goes out in bundles within the limit devices check (edge/names.py).
            profile["name"] = stored_name(profile["name"])
        return person_from_doc(PERSON(doc, f"hub person {uid}"), f"hub person {uid}")

    def persons(self, groups: tuple[str, ...] | None = None) -> list[SyncPerson]:
        """Decrypted live persons; with `groups`, those in any of them."""
        rows = self.db.execute("SELECT uid, wrapped_key, sealed, groups_json FROM persons WHERE erased IS NULL ORDER BY uid")
        wanted = None if groups is None else set(groups)
        return [self._open_person(r[0], r[1], r[2]) for r in rows if wanted is None or wanted & set(json.loads(r[3]))]

    def persons_by_uid(self, uids: tuple[str, ...]) -> list[SyncPerson]:
        """The live ones of `uids`, decrypted (a delta's upserts)."""
        rows = [r for uid in uids for r in self.db.execute("SELECT uid, wrapped_key, sealed FROM persons WHERE uid=? AND erased IS NULL", (uid,))]
        return [self._open_person(r[0], r[1], r[2]) for r in rows]

    def person_entries(self) -> list[PersonEntry]:
        rows = self.db.execute("SELECT uid, wrapped_key, sealed, groups_json, created, erased FROM persons ORDER BY created, uid")
        out = []
        for uid, wrapped, sealed, groups, created, erased in rows:
            p = self._open_person(uid, wrapped, sealed) if erased is None else None
            out.append(PersonEntry(uid, p.profile.name if p else "", tuple(json.loads(groups)), len(p.embeddings) if p else 0, created, erased))
        return out

    def find_person(self, name_or_uid: str) -> str:
        """The uid of a live person by name (compared normalised) or by uid."""
        rows = self.db.execute("SELECT uid FROM persons WHERE (uid=? OR name_tag=?) AND erased IS NULL", (name_or_uid, self._tag(name_or_uid)))
        if not rows:
            raise HubStoreError(f"no person {name_or_uid!r} on this hub (admin person list)")
        return str(rows[0][0])

    def remove_person(self, name_or_uid: str) -> str:
        """Deleted from the hub; devices drop it on the next push (it leaves every scope)."""
        uid = self.find_person(name_or_uid)
        with self.db.transaction():
            self.db.execute("DELETE FROM persons WHERE uid=?", (uid,))
            versions.bump(self.db, uid, (), False)
        return uid

    def erase_person(self, name_or_uid: str) -> str:
        """Crypto-erase here, and an erase owed to every device until each one confirms it."""
        uid = self.find_person(name_or_uid)
        with self.db.transaction():
            self.db.execute("UPDATE persons SET name_tag=NULL, wrapped_key=NULL, sealed=NULL, erased=? WHERE uid=?", (_now(), uid))
            versions.bump(self.db, uid, (), False)
            for d in self.devices():
                self.db.execute("INSERT INTO erasures VALUES (?, ?, ?, NULL) ON CONFLICT (uid, device) DO NOTHING", (uid, d.id, _now()))
        # secure_delete zeroed the old cells in the new page images; the WAL still holds the old
        # ones (the insert, earlier updates) until a checkpoint moves the pages and truncates it.
        self.db.checkpoint()
        return uid

    def erasures(self, uid: str | None = None) -> list[tuple[str, str, int, int | None]]:
        """(uid, device, requested, confirmed or None)."""
        if uid is None:
            return self.db.execute("SELECT uid, device, requested, confirmed FROM erasures ORDER BY uid, device")
        return self.db.execute("SELECT uid, device, requested, confirmed FROM erasures WHERE uid=? ORDER BY device", (uid,))

    def pending_erases(self, device_ids: list[str]) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT uid, device FROM erasures WHERE confirmed IS NULL")
        wanted = set(device_ids)
        return sorted({r[0] for r in rows if r[1] in wanted})

    # -- bundles and acks ---------------------------------------------------------------------
    def next_seq(self, scope: str) -> int:
        """The scope's next sequence. For a bundle scope (`device:` / `group:`) it is at least the
        clock in µs, so a hub restored from a backup (its counters gone back) still moves every
        device forward; devices refuse a seq far ahead of their own clock (`check_sequence`).
        Other counters (review ids) just count."""
        with self.db.transaction():
            rows = self.db.execute("SELECT seq FROM scopes WHERE scope=?" + self.db.for_update(), (scope,))
            seq = (rows[0][0] if rows else 0) + 1
            if scope.startswith(("device:", "group:")):
                seq = max(seq, time.time_ns() // 1000)
            self.db.execute("INSERT INTO scopes VALUES (?, ?) ON CONFLICT (scope) DO UPDATE SET seq=excluded.seq", (scope, seq))
        return int(seq)

    def record_bundle(self, scope: str, seq: int, persons: int, erases: list[str], recipients: list[str], version: int | None = None, epoch: int | None = None) -> None:
        """`version`: the person version it holds everything up to (sync.hub.versions); `epoch`: its group key epoch."""
        self.db.execute("INSERT INTO bundles (scope, seq, created, persons, erases_json, recipients_json, version, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (scope, seq, _now(), persons, json.dumps(erases), json.dumps(sorted(recipients)), version, epoch))

    def last_bundle(self, scope: str) -> tuple[int, int | None, int | None] | None:
        """(seq, version, epoch) of the scope's newest bundle, None before its first."""
        rows = self.db.execute("SELECT seq, version, epoch FROM bundles WHERE scope=? ORDER BY seq DESC LIMIT 1", (scope,))
        return (int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def acked_devices(self, scope: str) -> set[str]:
        """The devices that applied (acked ok) some bundle of `scope`: not new to it."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT device FROM gallery_acks WHERE scope=? AND ok=1", (scope,))}

    def record_gallery_ack(self, ack: dict[str, Any]) -> list[str]:
        """Stores a device's gallery ack; an ok ack confirms the erasures its bundle carried."""
        device, scope, seq = ack["device"], ack["scope"], ack["seq"]
        confirmed: list[str] = []
        with self.db.transaction():
            self.db.execute(
                # An ok ack wins over a nack of the same bundle (a catch-up and the group's bundle
                # share a seq: the one that came first may have been refused as a gap or a replay).
                "INSERT INTO gallery_acks VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, scope, seq) DO UPDATE SET ok=excluded.ok,"
                " gallery_version=excluded.gallery_version, error=excluded.error, at=excluded.at WHERE gallery_acks.ok=0 AND excluded.ok=1",
                (device, scope, seq, int(ack["ok"]), ack["gallery_version"], ack["error"], _now()),
            )
            rows = self.db.execute("SELECT erases_json FROM bundles WHERE scope=? AND seq=?", (scope, seq))
            if ack["ok"] and rows:
                for uid in json.loads(rows[0][0]):
                    if self.db.execute("SELECT 1 FROM erasures WHERE uid=? AND device=? AND confirmed IS NULL", (uid, device)):
                        self.db.execute("UPDATE erasures SET confirmed=? WHERE uid=? AND device=?", (_now(), uid, device))
                        confirmed.append(uid)
        return confirmed

    def pending_acks(self) -> list[tuple[str, str, int]]:
        """(device, scope, seq): the newest bundle of each scope that a recipient has not acked ok."""
        latest = self.db.execute("SELECT b.scope, b.seq, b.recipients_json FROM bundles b JOIN scopes s ON s.scope=b.scope AND s.seq=b.seq")
        acked = {(r[0], r[1], r[2]) for r in self.db.execute("SELECT device, scope, seq FROM gallery_acks WHERE ok=1")}
        return sorted((d, scope, seq) for scope, seq, recips in latest for d in json.loads(recips) if (d, scope, seq) not in acked)

    def gallery_acks(self, device_id: str | None = None) -> list[tuple[str, str, int, bool, int, str, int]]:
        rows = self.db.execute("SELECT device, scope, seq, ok, gallery_version, error, at FROM gallery_acks ORDER BY at, device, scope, seq")
        return [(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows if device_id is None or r[0] == device_id]

    # -- audit --------------------------------------------------------------------------------
    def ingest_audit(self, device_id: str, payload: bytes) -> IngestResult:
        """Checks and stores a batch in one transaction with the device's chain position."""
        with self.db.transaction():
            rows = self.db.execute("SELECT sign_pub, audit_seq, audit_hash FROM devices WHERE id=?" + self.db.for_update(), (device_id,))
            if not rows:
                raise HubStoreError(f"audit from unregistered device {device_id!r}")
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(rows[0][0]))
            ingest = AuditIngest({device_id: key}, {device_id: (int(rows[0][1]), str(rows[0][2]))})
            result = ingest.receive(device_id, payload)
            self.db.executemany(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING",
                [(device_id, r.seq, r.ts_us, r.kind, json.dumps(r.body), r.prev, r.hash, r.sig, person_uid_of(r.body)) for r in result.accepted],
            )
            if result.accepted:
                last = result.accepted[-1]
                self.db.execute("UPDATE devices SET audit_seq=?, audit_hash=?, last_seen=? WHERE id=?", (last.seq, last.hash, _now(), device_id))
            if result.problem and not result.problem.startswith("gap"):
                self.alert(device_id, result.problem)
        return result

    def alert(self, device_id: str, problem: str) -> None:
        self.db.execute("INSERT INTO alerts VALUES (?, ?, ?)", (_now(), device_id, problem[:1000]))

    def alerts(self, limit: int = 100) -> list[tuple[int, str, str]]:
        return self.db.execute("SELECT at, device, problem FROM alerts ORDER BY at DESC LIMIT ?", (limit,))

    def audit_query(self, device: str | None = None, person_uid: str | None = None, since_us: int = 0, kind: str | None = None, limit: int = 1000) -> list[tuple[str, AuditRecord]]:
        sql, params = "SELECT device, seq, ts_us, kind, body, prev, hash, sig FROM audit WHERE ts_us >= ?", [since_us]
        for column, value in (("device", device), ("person_uid", person_uid), ("kind", kind)):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        rows = self.db.execute(sql + " ORDER BY ts_us DESC, device, seq DESC LIMIT ?", (*params, limit))
        return [(r[0], AuditRecord(r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7])) for r in reversed(rows)]

    def audit_chain(self, device_id: str, after: int = 0, limit: int = 5000) -> list[AuditRecord]:
        rows = self.db.execute("SELECT seq, ts_us, kind, body, prev, hash, sig FROM audit WHERE device=? AND seq>? ORDER BY seq LIMIT ?", (device_id, after, limit))
        return [AuditRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6]) for r in rows]


def _check_kek(db: HubDb, kek: bytes) -> None:
    """The database remembers the id of the KEK that seals it (recorded at first open): another
    key is refused here, before any person fails to open with a less helpful error."""
    rows = db.execute("SELECT value FROM hub_meta WHERE key='kek_id'")
    if not rows:
        db.execute("INSERT INTO hub_meta VALUES ('kek_id', ?)", (crypto.kek_id(kek),))
    elif rows[0][0] != crypto.kek_id(kek):
        raise HubStoreError(f"hub database is sealed under KEK {rows[0][0]}, the key file holds KEK {crypto.kek_id(kek)}: wrong [hub] key_file, or a "
                            "`facegate hub rotate-kek` was interrupted (its hub.key.new / hub.key.old are next to the key file; run it again to finish)")


def _add_enroll_groups_column(db: HubDb) -> None:
    """A hub database from before enroll groups gets the column in place (its devices: none)."""
    if db.kind == "postgresql":
        db.execute("ALTER TABLE devices ADD COLUMN IF NOT EXISTS enroll_groups_json TEXT NOT NULL DEFAULT '[]'")
    elif "enroll_groups_json" not in {r[1] for r in db.execute("PRAGMA table_info(devices)")}:
        db.execute("ALTER TABLE devices ADD COLUMN enroll_groups_json TEXT NOT NULL DEFAULT '[]'")


def _status(stored: str) -> dict[str, Any]:
    """A device's stored status; {} for one that is not an object (stored before statuses were
    schema-checked), so the status page and `device list` never trip on it."""
    try:
        value = json.loads(stored)
    except (json.JSONDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
