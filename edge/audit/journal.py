"""The audit journal: every decision, enrollment, removal, key event, config reload and refused
message, in an append-only, hash-chained, signed SQLite file (`<data_dir>/audit.db`).

Each record carries the hash of the record before it, and its own hash is signed with the
device's Ed25519 key (`edge.identity`). Removing, reordering or editing a record breaks
the chain at that point; forging one needs the device key. `verify()` walks the chain and names
the first record that does not check out; given the hub's anchor (`edge.audit.anchor`, the
signed (seq, hash) of the last record the hub received), it also finds a journal whose tail was
deleted, which the chain alone cannot show. Triggers refuse UPDATE and DELETE, so the journal
cannot be changed through facegate or an honest SQLite client by mistake; a deliberate edit of
the file is what the chain and the signatures are there to reveal. The one deletion is `prune`
(edge.audit.retention decides what): the oldest records go, in the transaction that appends a
signed `checkpoint` record (edge.audit.checkpoint) naming the pruned chain's head, and `verify()`
walks from there. secure_delete and a WAL truncation take the pruned bytes out of the files.

The journal is plaintext (the hub must read it): bodies name persons by their random uid, never
by name, so an erased person's name does not outlive the erasure here.

The record format (hashing, signing, `check_record`) is `edge.audit.records`, shared with the hub;
records travel to it through `sync.outbox`, and it checks each one with `check_record`.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.audit.checkpoint import Checkpoint, checkpoint_body
from edge.audit.health import AuditHealth
from edge.audit.records import (
    CHECKPOINT,
    GENESIS,
    KINDS,
    AuditRecord,
    canonical_json,
    check_record,
    record_hash,
    sign_hash,
)
from edge.errors import AuditError, storage_advice
from edge.identity import load_signing_key

AUDIT_FILE = "audit.db"
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL, kind TEXT NOT NULL,"
        " body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, sig TEXT NOT NULL)"
    ),
    "CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records BEGIN SELECT RAISE(ABORT, 'audit journal is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records BEGIN SELECT RAISE(ABORT, 'audit journal is append-only'); END",
)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    records: int  # records checked (up to and including the first bad one)
    first_bad_seq: int | None
    reason: str
    anchor_seq: int | None = None  # the hub's anchor checked against the journal, if one was given
    checkpoint: Checkpoint | None = None  # the newest prune's checkpoint the walk started from

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "first_bad_seq": self.first_bad_seq, "reason": self.reason, "anchor_seq": self.anchor_seq,
                "pruned_upto": None if self.checkpoint is None else self.checkpoint.pruned_upto}


def _row_record(row: tuple[Any, ...]) -> AuditRecord:
    seq, ts_us, kind, body, prev, digest, sig = row
    return AuditRecord(seq, ts_us, kind, json.loads(body), prev, digest, sig)


class AuditLog:
    """`AuditLog.open(data_dir)`; `append(kind, body)`; `verify()`; `tail(n)`. Thread-safe; several
    processes may append to one journal (each append is one IMMEDIATE transaction)."""

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self._key = signing_key
        self.public_key = signing_key.public_key()
        self._lock = threading.Lock()
        self.health = AuditHealth(str(self.path))  # every append reports here (edge/audit/health.py)
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.path.touch(mode=0o600)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a record reported written survives a power cut
            self._db.execute("PRAGMA secure_delete=ON")  # a pruned record's cells are zeroed, not left in free space
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot open the audit journal ({exc}); {storage_advice(self.path, 'check the file and its directory')}") from exc

    @classmethod
    def open(cls, data_dir: Path, create: bool = True) -> AuditLog:
        """The journal of the gallery in `data_dir`, signed with the device key beside it (created
        on first use, mode 0600)."""
        data_dir = Path(data_dir)
        if not create and not (data_dir / AUDIT_FILE).exists():
            raise AuditError(f"{data_dir / AUDIT_FILE}: no audit journal here (nothing was audited in this data dir yet)")
        return cls(data_dir / AUDIT_FILE, load_signing_key(data_dir, create=create))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def append(self, kind: str, body: dict[str, Any]) -> AuditRecord:
        if kind not in KINDS:
            raise AuditError(f"audit kind {kind!r} unknown; valid kinds: {', '.join(KINDS)}")
        if not isinstance(body, dict):
            raise AuditError(f"audit body must be a dict (got {type(body).__name__})")
        body_json = canonical_json(body)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                record = self._insert(kind, body_json)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                error = AuditError(f"{self.path}: cannot append to the audit journal ({exc}); {storage_advice(self.path, 'check the file')}")
                self.health.failed(error)
                raise error from exc
        self.health.succeeded()
        return record

    def _insert(self, kind: str, body_json: str) -> AuditRecord:
        """The next record, inside the caller's IMMEDIATE transaction."""
        last = self._db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        ts_us = time.time_ns() // 1000
        digest = record_hash(seq, ts_us, kind, body_json, prev)
        sig = sign_hash(self._key, digest)
        self._db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (seq, ts_us, kind, body_json, prev, digest, sig))
        return AuditRecord(seq, ts_us, kind, json.loads(body_json), prev, digest, sig)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite rolls back on its own when it cannot; the error to report is the first
                pass

    def first_seq(self) -> int:
        """The oldest record's seq (0: an empty journal)."""
        with self._lock:
            row = self._db.execute("SELECT min(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def older_run_end(self, ts_us: int) -> int:
        """The last seq of the run, from the oldest record on, of records all written before `ts_us`
        (a record written later stops it, even if older ones follow after a clock step back)."""
        with self._lock:
            row = self._db.execute("SELECT min(seq) FROM records WHERE ts_us >= ?", (ts_us,)).fetchone()
            if row[0] is not None:
                return int(row[0]) - 1
            return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0])

    def checkpoint_record(self) -> AuditRecord | None:
        """The newest `checkpoint` record (None: never pruned)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM records WHERE kind=? ORDER BY seq DESC LIMIT 1", (CHECKPOINT,)).fetchone()
        return None if row is None else _row_record(row)

    def prune(self, upto: int, ack: dict[str, Any]) -> AuditRecord | None:
        """Deletes every record up to `upto` and appends the checkpoint naming it, in one
        transaction; None when nothing is left to prune there. The caller (edge.audit.retention)
        checked that the hub's signed `ack` anchors `upto` or later: this only refuses an ack
        whose anchor is below `upto` (Checkpoint.of would refuse the record)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT hash, (SELECT count(*) FROM records WHERE seq <= ?) FROM records WHERE seq = ?", (upto, upto)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return None
                body = checkpoint_body(upto, row[0], int(row[1]), ack)
                record = self._insert(CHECKPOINT, canonical_json(body))
                Checkpoint.of(record)  # never write a checkpoint verify() would refuse
                self._db.execute("DROP TRIGGER records_no_delete")
                self._db.execute("DELETE FROM records WHERE seq <= ?", (upto,))
                self._db.execute(_SCHEMA[2])
                self._db.execute("COMMIT")
            except (sqlite3.Error, AuditError) as exc:
                self._rollback()
                raise AuditError(f"{self.path}: cannot prune the audit journal ({exc})") from exc
            # The deleted cells are zeroed in the new page images; the WAL still holds the old ones
            # until a checkpoint copies the pages back and truncates it (a reader may delay that).
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return record

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(seq) FROM records").fetchone()
        return int(row[0] or 0)

    def record(self, seq: int) -> AuditRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM records WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else _row_record(row)

    def since(self, seq: int, limit: int) -> list[AuditRecord]:
        """Up to `limit` records after `seq`, in order (what the sync outbox picks up)."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [_row_record(r) for r in rows]

    def tail(self, n: int) -> list[AuditRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM records ORDER BY seq DESC LIMIT ?", (max(0, n),)).fetchall()
        return [_row_record(r) for r in reversed(rows)]

    def find_decision(self, event_id: str) -> dict[str, Any] | None:
        """The body of the `decision` record of `event_id` (None: no such decision was audited)."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM records WHERE kind='decision' AND json_extract(body, '$.event_id')=? ORDER BY seq DESC LIMIT 1", (event_id,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _pages(self, size: int = 2048) -> Iterator[tuple[Any, ...]]:
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute("SELECT * FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (last, size)).fetchall()
            yield from rows
            if len(rows) < size:
                return
            last = rows[-1][0]

    def verify(self, public_key: Ed25519PublicKey | None = None, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Walks the whole chain (from the newest prune's checkpoint on); the report names the first
        record that fails and why. With the hub's `anchor` (seq, hash), a journal that ends below it
        or holds another record there fails too."""
        cp_record, checkpoint = self.checkpoint_record(), None
        if cp_record is not None:
            try:
                checkpoint = Checkpoint.of(cp_record)
            except AuditError as exc:
                return VerifyReport(False, 0, cp_record.seq, str(exc), None if anchor is None else anchor[0])
        report = dataclasses.replace(self._walk(public_key or self.public_key, checkpoint), checkpoint=checkpoint)
        if report.ok and checkpoint is not None:
            report = self._check_anchor(report, (checkpoint.anchor_seq, checkpoint.anchor_hash), "the checkpoint's hub ack")
        if anchor is None or not report.ok:
            return dataclasses.replace(report, anchor_seq=None if anchor is None else anchor[0])
        return self._check_anchor(report, anchor, "the hub's anchor")

    def _check_anchor(self, report: VerifyReport, anchor: tuple[int, str], what: str) -> VerifyReport:
        seq, digest = anchor
        checkpoint = report.checkpoint
        last = self.last_seq()
        if last < seq:
            return dataclasses.replace(report, ok=False, first_bad_seq=last + 1, anchor_seq=seq, reason=(
                f"journal truncated below {what}: it ends at record {last}, but the hub acknowledged records up to {seq} "
                f"(hash {digest[:16]}…): records {last + 1}..{seq} were deleted"))
        if checkpoint is not None and seq <= checkpoint.pruned_upto:
            mine: str | None = checkpoint.pruned_hash if seq == checkpoint.pruned_upto else digest  # below: pruned, vouched for by the checkpoint
        else:
            record = self.record(seq)
            mine = None if record is None else record.hash
        if mine != digest:
            return dataclasses.replace(report, ok=False, first_bad_seq=seq, anchor_seq=seq, reason=(
                f"record {seq}: hash differs from {what} (hub holds {digest[:16]}…): "
                "the journal was truncated below the hub's anchor and written again, or replaced"))
        return dataclasses.replace(report, anchor_seq=seq, reason=f"{report.reason}; matches {what} at record {seq}")

    def _walk(self, key: Ed25519PublicKey, checkpoint: Checkpoint | None) -> VerifyReport:
        prev, expected_seq, count = GENESIS, 1, 0
        if checkpoint is not None:
            prev, expected_seq = checkpoint.pruned_hash, checkpoint.pruned_upto + 1
        for row in self._pages():
            count += 1
            try:
                record = _row_record(row)
            except (json.JSONDecodeError, TypeError) as exc:
                return VerifyReport(False, count, row[0], f"record {row[0]}: body is not JSON ({exc}): the record was altered")
            if record.seq != expected_seq:
                return VerifyReport(False, count, record.seq, _missing(expected_seq, record.seq, checkpoint))
            if not isinstance(record.ts_us, int) or record.kind not in KINDS:
                return VerifyReport(False, count, record.seq, f"record {record.seq}: malformed time or kind")
            reason = check_record(record, key, prev)
            if reason:
                return VerifyReport(False, count, record.seq, reason)
            prev, expected_seq = record.hash, record.seq + 1
        pruned = "" if checkpoint is None else f" after the checkpoint at record {checkpoint.seq} (records 1..{checkpoint.pruned_upto} pruned)"
        return VerifyReport(True, count, None, f"{count} records, chain and signatures intact{pruned}")


def _missing(expected: int, got: int, checkpoint: Checkpoint | None) -> str:
    if got < expected:  # a record the newest checkpoint says was pruned is still here (or came back)
        return f"record {got}: the checkpoint at record {checkpoint.seq if checkpoint else '?'} pruned records up to {expected - 1}, yet it is here"
    if checkpoint is not None and expected == checkpoint.pruned_upto + 1:
        return (f"record {got}: the checkpoint at record {checkpoint.seq} pruned records up to {checkpoint.pruned_upto}, so the journal "
                f"must go on at record {expected}: records {expected}..{got - 1} are missing (deleted below the checkpoint)")
    return f"record {got}: expected record {expected}: records {expected}..{got - 1} are missing"
