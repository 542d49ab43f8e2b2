"""The device's durable outbox (`<data_dir>/outbox.db`): what must reach the hub, in order.

Audit records are copied in from the journal, each `enroll` record followed by its enrollment
upload; a cursor in the same database moves in the same transaction, so a crash neither skips
nor doubles a record. Rows leave only when the HUB acknowledges them (`ack_audit`, `ack_enrollments`), not
when the broker does: a broker that restarts without its store, or a hub that was away, costs a
resend, never a record. The agent publishes rows in id order (`pending`) and goes back to the
oldest unacknowledged row after a reconnect or an ack timeout; the hub drops duplicates by
(device, seq).

Rows that left without reaching the hub (an ack nobody should have believed, a damaged file) are
still in the journal: when the hub sees a gap it asks for a resend (sync.control) and
`refeed_audit` copies the records from that seq up to the cursor in again, in order.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from edge.audit.journal import AuditLog
from edge.audit.records import AuditRecord, canonical_json
from edge.errors import AuditError

OUTBOX_FILE = "outbox.db"
AUDIT, ENROLLMENT = "audit", "enrollment"
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
        " seq INTEGER, ref TEXT, body TEXT NOT NULL, UNIQUE (kind, seq), UNIQUE (kind, ref))"
    ),
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    kind: str  # AUDIT (body: one audit record) or ENROLLMENT (body: the whole upload message)
    seq: int | None  # the audit record's sequence number
    ref: str | None  # the enrolled person's uid
    body: str


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.path.touch(mode=0o600)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a power cut may lose the last transactions, never reorder them, and everything
            # here is rebuilt from the journal (which is FULL) past the cursor: nothing is lost.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Acked rows are copies of audit records: zeroed when deleted, so a pruned record's
            # body does not outlive the prune here (`checkpoint` then empties the WAL).
            self._db.execute("PRAGMA secure_delete=ON")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot open the sync outbox ({exc})") from exc

    @classmethod
    def open(cls, data_dir: Path) -> Outbox:
        return cls(Path(data_dir) / OUTBOX_FILE)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise AuditError(f"{self.path}: cannot write the sync outbox ({exc})") from exc

    def audit_cursor(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='audit_cursor'").fetchone()
        return int(row[0]) if row else 0

    def feed_audit(self, log: AuditLog, upload: Callable[[AuditRecord], tuple[str, str] | tuple[str, str, bool] | None], limit: int = 2000) -> int:
        """Copies up to `limit` new journal records in, each followed by its upload (`upload(record)`
        → (person uid, message) for an enrollment to send the hub, (uid, message, True) for one that
        replaces the uid's waiting upload (a withdrawal), else None), and moves the cursor: one
        transaction, so the outbox always equals the journal up to the cursor."""
        records = log.since(self.audit_cursor(), limit)
        if not records:
            return 0
        statements: list[tuple[str, tuple[object, ...]]] = []
        for r in records:
            statements.append(("INSERT OR IGNORE INTO messages (kind, seq, body) VALUES (?, ?, ?)", (AUDIT, r.seq, canonical_json(r.to_dict()))))
            extra = upload(r)
            if extra is not None:
                verb = "INSERT OR REPLACE" if len(extra) > 2 and extra[2] else "INSERT OR IGNORE"  # type: ignore[misc]
                statements.append((f"{verb} INTO messages (kind, ref, body) VALUES (?, ?, ?)", (ENROLLMENT, extra[0], extra[1])))
        statements.append(("INSERT INTO meta VALUES ('audit_cursor', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (records[-1].seq,)))
        self._write(statements)
        return len(records)

    def refeed_audit(self, log: AuditLog, from_seq: int, page: int = 2000) -> int:
        """Puts the journal's records `from_seq`..cursor back in, in seq order, and moves the
        pending enrollment uploads after them (the hub takes an upload only once it holds its
        `enroll` record). One transaction; returns how many records went in. `from_seq` is bounded
        to the journal (at least 1); above the cursor there is nothing to do: those records are
        not fed yet and will come in order."""
        cursor = self.audit_cursor()
        start = max(1, from_seq)
        if start > cursor:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                uploads = self._db.execute("SELECT kind, ref, body FROM messages WHERE kind=? ORDER BY id", (ENROLLMENT,)).fetchall()
                self._db.execute("DELETE FROM messages WHERE kind=? OR (kind=? AND seq >= ?)", (ENROLLMENT, AUDIT, start))
                count, after = 0, start - 1
                while after < cursor:
                    records = [r for r in log.since(after, page) if r.seq <= cursor]
                    if not records:
                        break
                    self._db.executemany("INSERT OR IGNORE INTO messages (kind, seq, body) VALUES (?, ?, ?)",
                                         [(AUDIT, r.seq, canonical_json(r.to_dict())) for r in records])
                    count, after = count + len(records), records[-1].seq
                self._db.executemany("INSERT INTO messages (kind, ref, body) VALUES (?, ?, ?)", uploads)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise AuditError(f"{self.path}: cannot write the sync outbox ({exc})") from exc
        return count

    def pending(self, after_id: int, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = self._db.execute("SELECT id, kind, seq, ref, body FROM messages WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        return [OutboxRow(*r) for r in rows]

    def first_id(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT min(id) FROM messages").fetchone()
        return row[0]

    def ack_audit(self, upto: int) -> None:
        self._write([("DELETE FROM messages WHERE kind=? AND seq <= ?", (AUDIT, upto))])

    def checkpoint(self) -> None:
        """Moves the WAL into the file and truncates it: old page images of deleted rows go."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def ack_enrollments(self, uids: list[str]) -> None:
        self._write([("DELETE FROM messages WHERE kind=? AND ref=?", (ENROLLMENT, uid)) for uid in uids])

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])


def leading_group(rows: list[OutboxRow]) -> list[OutboxRow]:
    """The first message's rows: consecutive audit records, or one enrollment."""
    if rows[0].kind != AUDIT:
        return rows[:1]
    end = next((i for i, r in enumerate(rows) if r.kind != AUDIT), len(rows))
    return rows[:end]
