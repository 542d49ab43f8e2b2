"""Hub "not this person" reports on the device: verified, then the same path as `gallery reject-match`.

An operator on the hub console says a grant decision did not show the person it named
(docs/hub.md "Reports"). The hub signs a `report` (sync.signing, domain `REPORT_DOMAIN`) for the
device that decided and publishes it on `devices/<id>/report`. The device (the sync agent's
worker, which owns a gallery store and writes bundles into it already) takes it only when:
- it verifies with a hub key this device trusts (not revoked);
- its `device` is this device (a genuine report for another device, replayed here, is refused);
- its `report_id` was never taken before (kept in `reports_seen.json`, the newest `MAX_SEEN`),
  and it is not older than `MAX_AGE_S` (so an id that fell out of that list is still refused).
Those refusals go through the agent's `reject` (audited as `sync` rejects) and get no answer: an
unverified message must not be able to change what the hub shows for a real report.
A verified report then runs `edge.gallery.reject_match` (a kept probe becomes a negative of its
person, `[match] negative_margin`), is audited `match_rejected` with `by: hub` and the report id,
and is answered on `devices/<id>/report/status`: applied, or refused with the RejectError code
(probes_off, probe_expired, unknown_event…), `person_mismatch` (the audited decision named
someone else than the report) or `gallery_error` (the gallery could not be written: nothing changed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.atomic_file import write_atomic
from edge.audit.journal import AuditLog
from edge.errors import AuditError, FacegateError
from edge.gallery.negatives import RejectError
from edge.gallery.reject_match import reject_match
from edge.gallery.store import GalleryStore
from sync import protocol, signing
from sync.control import MisaddressedError
from sync.protocol import REPORT_DOMAIN, ProtocolError, ReplayError

MAX_SEEN = 4096
MAX_AGE_S = 7 * 86400
SEEN_FILE = "reports_seen.json"
_LOG = logging.getLogger(__name__)


def check_report(payload: bytes, device_id: str, keys: Mapping[str, Ed25519PublicKey], seen: set[str], now: float) -> dict[str, Any]:
    """The report in `payload` if this device may act on it (module doc); ProtocolError else."""
    message = protocol.decode(payload, "report")
    signing.verify(message, REPORT_DOMAIN, keys, "report")
    if message["device"] != device_id:
        raise MisaddressedError(f"report: signed by the hub for device {message['device']!r}, not for {device_id}: replayed")
    if message["report_id"] in seen:
        raise ReplayError(f"report {message['report_id']}: already taken: replayed")
    if message["created"] < now - MAX_AGE_S:
        raise ReplayError(f"report {message['report_id']}: made {int(now - message['created'])} s ago, older than {MAX_AGE_S} s: replayed")
    return message


class SeenReports:
    """The report ids this device took, newest last, at most MAX_SEEN, kept across restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SEEN_FILE
        try:
            ids = json.loads(self.path.read_text())
            self._ids = [str(i) for i in ids][-MAX_SEEN:] if isinstance(ids, list) else []
        except (OSError, ValueError):
            self._ids = []
        self.ids = set(self._ids)

    def add(self, report_id: str) -> None:
        self._ids = [*self._ids, report_id][-MAX_SEEN:]
        self.ids = set(self._ids)
        write_atomic(self.path, json.dumps(self._ids).encode())


class DeviceReports:
    """The agent's handler for `devices/<id>/report`; `publish(leaf, message)` sends the answer."""

    def __init__(self, device_id: str, journal: AuditLog, keep_h: float, keep_max: int,
                 reject: Callable[[str, bytes, Exception], None], publish: Callable[[str, dict[str, Any]], None]) -> None:
        self.device_id, self._journal, self._keep = device_id, journal, (keep_h, keep_max)
        self._reject, self._publish = reject, publish
        self.seen = SeenReports(Path(journal.path).parent)

    def handle(self, store: GalleryStore, topic: str, payload: bytes, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """"applied" / "refused" for a verified report (answered), None for one refused unverified."""
        try:
            report = check_report(payload, self.device_id, keys, self.seen.ids, time.time())
        except ProtocolError as exc:
            self._reject(topic, payload, exc)
            return None
        code, reason = self._apply(store, report)
        self.seen.add(report["report_id"])
        state = "applied" if code == "" else "refused"
        self._publish(protocol.REPORT_STATUS, {"type": "report_status", "report_id": report["report_id"], "state": state,
                                               "code": code, "reason": reason[:1000], "at": int(time.time())})
        return state

    def _apply(self, store: GalleryStore, report: dict[str, Any]) -> tuple[str, str]:
        event_id, uid = report["event_id"], report["person_uid"]
        decided = self._journal.find_decision(event_id)
        if decided is not None and decided.get("person_uid") and decided.get("person_uid") != uid:
            return "person_mismatch", f"decision {event_id} named {decided.get('person_uid')}, not {uid}: nothing changed"
        try:
            done = reject_match(store, event_id, *self._keep, self._journal.find_decision)
        except RejectError as exc:
            _LOG.warning("hub report %s on decision %s refused: %s", report["report_id"], event_id, exc)
            return exc.code, str(exc)
        except FacegateError as exc:  # a gallery locked or full disk: nothing changed; the operator may report again
            _LOG.error("hub report %s on decision %s not applied: %s", report["report_id"], event_id, exc)
            return "gallery_error", f"{type(exc).__name__}: {exc}"
        if done.person_uid != uid:  # the probe was kept for someone else than the audit says: undone by nobody, say so
            _LOG.error("hub report %s: decision %s's probe was of %s, the report named %s", report["report_id"], event_id, done.person_uid, uid)
        if not done.already:
            try:
                self._journal.append("match_rejected", {"event_id": event_id, "person_uid": done.person_uid, "negative_uid": done.negative_uid,
                                                        "negatives": done.negatives, "by": "hub", "report_id": report["report_id"]})
            except AuditError as exc:  # the negative stands (a wrong grant must stop); the record is what is lost
                _LOG.error("match_rejected of hub report %s not audited: %s", report["report_id"], exc)
        _LOG.warning("hub report %s: decision %s's face is now a negative of %s", report["report_id"], event_id, done.person_uid)
        return "", "already rejected" if done.already else f"negative {done.negative_uid} ({done.negatives} in all)"
