""""Not this person" reports on the hub: made from a grant decision, signed to its device, answered.

An operator (console `Reports`, docs/hub.md) says that a grant decision the hub holds in its audit
copy did not show the person it named. `MatchReports.create` checks that the decision exists on
that device and named that person, stores a report (`sent`), and gives the signed `report`
message (sync.signing, domain `REPORT_DOMAIN`, a fresh `report_id`) to publish on
`devices/<id>/report`. The device verifies it and runs the same code path as `facegate gallery
reject-match` (sync.reports); its `report_status` answer is stored by `record_status` once: a
second answer for the same report, or one from another device, changes nothing. Every step is in
`hub_audit`.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import protocol, signing
from sync.hub.store import HubStore, HubStoreError
from sync.protocol import REPORT_DOMAIN

SCAN = 20_000  # decisions of that person on that device searched for the event id
MAX_REASON = 500
STATES = ("sent", "applied", "refused")
SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS match_reports (id TEXT PRIMARY KEY, device TEXT NOT NULL, event_id TEXT NOT NULL, person_uid TEXT NOT NULL,"
     " camera TEXT NOT NULL, reason TEXT NOT NULL, by_user TEXT NOT NULL, created BIGINT NOT NULL, state TEXT NOT NULL,"
     " answered BIGINT, code TEXT NOT NULL, detail TEXT NOT NULL)"),
    "CREATE TABLE IF NOT EXISTS hub_audit (at BIGINT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL)",
)
_COLUMNS = "id, device, event_id, person_uid, camera, reason, by_user, created, state, answered, code, detail"


class ReportError(HubStoreError):
    """A report names no grant decision of that device and person, or has no reason."""


@dataclass(frozen=True, slots=True)
class Report:
    id: str
    device: str
    event_id: str
    person_uid: str
    camera: str
    reason: str
    by: str
    created: int
    state: str  # sent | applied | refused
    answered: int | None  # when the device answered (its clock)
    code: str  # the device's refusal code (probes_off, probe_expired, person_mismatch…); "" when applied
    detail: str


class MatchReports:
    def __init__(self, store: HubStore) -> None:
        self.store, self.db = store, store.db
        with self.db.transaction():
            for statement in SCHEMA:
                self.db.execute(statement)

    def _audit(self, action: str, subject: str, detail: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO hub_audit VALUES (?, ?, ?, ?)", (int(time.time()), action, subject, json.dumps(detail, sort_keys=True)))

    def decision(self, device: str, event_id: str, person_uid: str) -> dict[str, Any]:
        """The body of the grant decision `event_id` of `device` naming `person_uid`; ReportError else."""
        self.store.device(device)  # unregistered: HubStoreError
        for _device, record in self.store.audit_query(device, person_uid, 0, "decision", SCAN):
            if record.body.get("event_id") == event_id:
                if record.body.get("decision") != "grant":
                    raise ReportError(f"decision {event_id} of {device} was a {record.body.get('decision')}, not a grant: nothing to report")
                return record.body
        raise ReportError(f"no grant decision {event_id[:64]!r} of {person_uid[:32]} on device {device[:64]} in the hub's audit")

    def create(self, device: str, event_id: str, person_uid: str, reason: str, by: str, key: Ed25519PrivateKey) -> tuple[Report, bytes]:
        """The stored report and the signed message to publish on `devices/<device>/report`."""
        reason = " ".join(reason.split())
        if not reason or len(reason) > MAX_REASON:
            raise ReportError(f"reason: say in 1-{MAX_REASON} characters why this is not the person")
        body = self.decision(device, event_id, person_uid)
        report_id, now = secrets.token_hex(16), int(time.time())
        message = {"v": protocol.VERSION, "type": "report", "device": device, "report_id": report_id, "event_id": event_id,
                   "person_uid": person_uid, "reason": reason, "created": now}
        signed = protocol.encode(signing.sign(message, REPORT_DOMAIN, key))
        camera = str(body.get("camera") or "")[:64]
        with self.db.transaction():
            self.db.execute(f"INSERT INTO match_reports ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sent', NULL, '', '')",
                            (report_id, device, event_id, person_uid, camera, reason, by, now))
            self._audit("report.sent", by, {"report": report_id, "device": device, "event_id": event_id, "person_uid": person_uid, "reason": reason})
        return self.get(report_id), signed

    def get(self, report_id: str) -> Report:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM match_reports WHERE id=?", (report_id,))
        if not rows:
            raise ReportError(f"no report {report_id[:32]!r}")
        return Report(*rows[0])

    def list(self, state: str | None = None, device: str | None = None, limit: int = 500) -> list[Report]:
        sql, params = f"SELECT {_COLUMNS} FROM match_reports WHERE 1=1", []
        for column, value in (("state", state), ("device", device)):
            if value:
                sql += f" AND {column}=?"
                params.append(value)
        return [Report(*r) for r in self.db.execute(sql + " ORDER BY created DESC, id LIMIT ?", (*params, limit))]

    def record_status(self, device: str, payload: bytes) -> Report | None:
        """The device's answer, stored when it is the first for a report sent to that very device;
        None (nothing changed) otherwise."""
        answer = protocol.decode(payload, "report_status")
        if answer["device"] != device:
            raise protocol.ProtocolError(f"report status on {device}'s topic claims {answer['device']!r}")
        with self.db.transaction():
            rows = self.db.execute("SELECT state FROM match_reports WHERE id=? AND device=?", (answer["report_id"], device))
            if not rows or rows[0][0] != "sent":
                return None
            self.db.execute("UPDATE match_reports SET state=?, answered=?, code=?, detail=? WHERE id=?",
                            (answer["state"], answer["at"], answer["code"], answer["reason"], answer["report_id"]))
            self._audit(f"report.{answer['state']}", device, {"report": answer["report_id"], "code": answer["code"], "detail": answer["reason"]})
        return self.get(answer["report_id"])
