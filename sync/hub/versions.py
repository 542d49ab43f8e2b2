"""Per-person versions on the hub: what changed since a bundle, so a device gets only that.

Every write of a person (`HubStore.add_person`, `remove_person`, `erase_person`; review merges
and console edits go through `add_person` again) takes the next value of one hub-wide change
counter (`hub_meta` row `person_version`, locked FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
SQLite) in the same transaction and appends (uid, version, groups, live) to `person_log`. Writers
therefore commit in version order, so a reader never sees version v without every version below
it. Each bundle records the highest version it saw (`bundles.version`, read before its persons).
A delta from that bundle looks at the persons with a row above it: live now in one of the
scope's groups → upsert; in the scope at the base version (their newest row at or below it) or
at any version above it, but not now → remove; neither → nothing (a change in another group is
not this scope's business). "Above it" matters: a full bundle read its version before its
persons, so it may hold a person added just after, who must still be removed later.
A person changed while a bundle was being built is sent again by the next delta (an upsert is
idempotent), never missed.

Rows hold no personal data: random uids, group names, integers (like the `erasures` table).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sync.hub.db import HubDb

SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS person_log (uid TEXT NOT NULL, version BIGINT NOT NULL, groups_json TEXT NOT NULL, live INTEGER NOT NULL,"
     " PRIMARY KEY (uid, version))"),
    "CREATE INDEX IF NOT EXISTS person_log_version ON person_log (version)",
    "CREATE INDEX IF NOT EXISTS gallery_acks_scope ON gallery_acks (scope, ok, device)",  # acked_devices: which devices are new to a scope
)
EPOCHS_SCHEMA = ("CREATE TABLE IF NOT EXISTS group_epochs (scope TEXT PRIMARY KEY, epoch BIGINT NOT NULL, key_wrapped BLOB NOT NULL,"
                 " members_json TEXT NOT NULL, eph TEXT NOT NULL, wraps_json TEXT NOT NULL)")  # sync.hub.epochs's table
_COUNTER = "person_version"  # the `hub_meta` row that counts person changes


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed in a scope since version `base`: uids to send, uids to drop, and `version`,
    the highest version seen (what the bundle built from it records)."""

    upserts: tuple[str, ...]
    removes: tuple[str, ...]
    version: int


def migrate(db: HubDb) -> None:
    """Tables, a `version` column on bundles (NULL: built before versions, never a delta base),
    and version 0 for persons stored before versions existed."""
    for statement in (*SCHEMA, EPOCHS_SCHEMA):
        db.execute(statement)
    _add_column(db, "bundles", "version", "BIGINT")
    _add_column(db, "bundles", "epoch", "BIGINT")
    _add_column(db, "group_epochs", "ratchet_base", "BIGINT")  # NULL: a fresh random key (sync.hub.epochs)
    _add_column(db, "group_epochs", "erased_mark", "BIGINT")  # NULL: unknown, the next bundle starts a new epoch
    db.execute("INSERT INTO person_log SELECT uid, 0, groups_json, CASE WHEN erased IS NULL THEN 1 ELSE 0 END FROM persons"
               " WHERE NOT EXISTS (SELECT 1 FROM person_log l WHERE l.uid = persons.uid)")


def _add_column(db: HubDb, table: str, column: str, kind: str) -> None:
    if db.kind == "postgresql":
        db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
    elif column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def bump(db: HubDb, uid: str, groups: tuple[str, ...], live: bool) -> int:
    """The person's next version, in the caller's transaction (which holds the counter's lock
    until it commits)."""
    with db.transaction():
        rows = db.execute("SELECT value FROM hub_meta WHERE key=?" + db.for_update(), (_COUNTER,))
        version = (int(rows[0][0]) if rows else 0) + 1
        db.execute("INSERT INTO hub_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value", (_COUNTER, str(version)))
        db.execute("INSERT INTO person_log VALUES (?, ?, ?, ?)", (uid, version, json.dumps(sorted(groups)), int(live)))
    return int(version)


def current(db: HubDb) -> int:
    """The highest committed version (read BEFORE a full bundle's persons)."""
    rows = db.execute("SELECT max(version) FROM person_log")
    return int(rows[0][0] or 0) if rows else 0


def since(db: HubDb, base: int, groups: tuple[str, ...]) -> Delta:
    """The changes above version `base` for a scope of `groups`."""
    wanted = set(groups)
    latest: dict[str, tuple[int, bool]] = {}
    ever: set[str] = set()  # in the scope at some version above base: a full bundle built then may have carried them
    for uid, version, groups_json, live in db.execute("SELECT uid, version, groups_json, live FROM person_log WHERE version > ? ORDER BY version", (base,)):
        latest[uid] = (int(version), bool(live and wanted & set(json.loads(groups_json))))
        if latest[uid][1]:
            ever.add(uid)
    upserts, removes = [], []
    for uid in sorted(latest):
        if latest[uid][1]:
            upserts.append(uid)
            continue
        if uid in ever:  # a remove the device may not need costs nothing; a missing one keeps a person at the door
            removes.append(uid)
            continue
        before = db.execute("SELECT groups_json, live FROM person_log WHERE uid=? AND version <= ? ORDER BY version DESC LIMIT 1", (uid, base))
        if before and before[0][1] and wanted & set(json.loads(before[0][0])):
            removes.append(uid)
    return Delta(tuple(upserts), tuple(removes), max([base, *(v for v, _in in latest.values())]))


def live_count(db: HubDb, groups: tuple[str, ...]) -> int:
    """How many persons a full bundle of `groups` holds (no person opened)."""
    wanted = set(groups)
    return sum(1 for (g,) in db.execute("SELECT groups_json FROM persons WHERE erased IS NULL") if wanted & set(json.loads(g)))
