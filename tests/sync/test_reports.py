"""sync.reports without a broker: which hub "not this person" reports a device takes (signed by a
trusted hub key, for this device, never seen, not stale), what it does with one (the reject-match
path on a real encrypted gallery, audited `match_rejected` by hub), and what it answers."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit.journal import AuditLog
from edge.gallery import negatives
from edge.gallery.crypto import new_key
from edge.gallery.search import Gallery, PersonProfile
from edge.gallery.store import GalleryStore
from edge.identity import raw_public
from sync import protocol, signing
from sync.hub.ingest import resend_message
from sync.hubkeys import ROTATION_DOMAIN, HubKeyring
from sync.protocol import REPORT_DOMAIN
from sync.rejects import RejectLimiter
from sync.reports import MAX_AGE_S, SEEN_FILE, DeviceReports

DEVICE, MODEL, DIM = "door-1", "test-model", 64
HUB = Ed25519PrivateKey.generate()
KEYS = {signing.key_id(HUB.public_key()): HUB.public_key()}
EVENT = "0123456789abcdef"


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Site:
    """A gallery with A enrolled, a journal with A's grant `EVENT`, its probe kept, and a reports handler."""

    def __init__(self, tmp_path: Path, keep_h: float = 24.0, keep_probe: bool = True) -> None:
        kek = new_key()
        with Gallery.open(tmp_path, kek, MODEL, DIM, 0.3, create=True) as gallery:
            gallery.enroll(PersonProfile("A"), [_unit(1)], [1.0])
        self.store = GalleryStore.open(tmp_path, kek)
        record = self.store.find("A")
        self.person_id, self.uid = record.id, record.uid
        self.log = AuditLog.open(tmp_path)
        self.log.append("decision", {"event_id": EVENT, "decision": "grant", "person_uid": self.uid, "camera": "front", "score": 0.31})
        if keep_probe:
            negatives.keep_probe(self.store, EVENT, self.person_id, _unit(2), MODEL, 3600.0, 100)
        self.answers: list[tuple[str, dict]] = []
        limiter = RejectLimiter(self.log.append)
        self.reports = DeviceReports(DEVICE, self.log, keep_h, 100, lambda t, p, e: limiter.record(t, type(e).__name__, {
            "topic": t, "error": type(e).__name__, "reason": str(e), "bytes": len(p), "sha256": hashlib.sha256(p).hexdigest()}),
            lambda leaf, m: self.answers.append((leaf, m)))

    def handle(self, payload: bytes) -> str | None:
        return self.reports.handle(self.store, protocol.device_topic(DEVICE, protocol.REPORT), payload, KEYS)

    def kinds(self, kind: str) -> list[dict]:
        return [r.body for r in self.log.tail(100) if r.kind == kind]

    def negatives(self) -> int:
        return len(negatives.list_negatives(self.store, self.person_id))

    def close(self) -> None:
        self.store.close()
        self.log.close()


@pytest.fixture
def site(tmp_path: Path):
    s = Site(tmp_path)
    yield s
    s.close()


def report(uid: str, device: str = DEVICE, key: Ed25519PrivateKey = HUB, event: str = EVENT, created: int | None = None,
           report_id: str = "ab" * 16) -> bytes:
    message = {"v": 1, "type": "report", "device": device, "report_id": report_id, "event_id": event, "person_uid": uid,
               "reason": "her sister", "created": int(time.time()) if created is None else created}
    return protocol.encode(signing.sign(message, REPORT_DOMAIN, key))


def test_a_signed_report_makes_the_kept_probe_a_negative_audited_by_hub(site: Site) -> None:
    assert site.handle(report(site.uid)) == "applied"
    assert site.negatives() == 1
    [done] = site.kinds("match_rejected")
    assert done["by"] == "hub" and done["report_id"] == "ab" * 16 and done["event_id"] == EVENT and done["person_uid"] == site.uid
    [(leaf, answer)] = site.answers
    assert leaf == protocol.REPORT_STATUS and answer["state"] == "applied" and answer["code"] == "" and answer["report_id"] == "ab" * 16
    # the answer passes the schema the hub decodes it with
    protocol.decode(protocol.encode({"v": 1, "device": DEVICE, **answer}), "report_status")
    assert json.loads((Path(site.log.path).parent / SEEN_FILE).read_text()) == ["ab" * 16]


def test_unsigned_foreign_misaddressed_replayed_and_stale_reports_are_refused_and_audited(site: Site, tmp_path: Path) -> None:
    unsigned = json.loads(report(site.uid))
    unsigned.pop("sig"), unsigned.pop("key_id")
    altered = {**json.loads(report(site.uid)), "event_id": "fedcba9876543210"}
    resend = json.loads(resend_message(DEVICE, 1, HUB))  # a real hub signature, for another domain
    as_report = {**{k: v for k, v in json.loads(report(site.uid)).items() if k not in ("sig", "key_id")}, "key_id": resend["key_id"], "sig": resend["sig"]}
    attacks = {
        "SignatureError": [protocol.encode(unsigned), report(site.uid, key=Ed25519PrivateKey.generate()), json.dumps(altered).encode(),
                           protocol.encode(as_report)],
        "MisaddressedError": [report(site.uid, device="door-2")],
        "ReplayError": [report(site.uid, created=int(time.time()) - MAX_AGE_S - 60, report_id="cd" * 16)],
    }
    for payloads in attacks.values():
        for payload in payloads:
            assert site.handle(payload) is None
    assert site.negatives() == 0 and site.answers == [] and site.kinds("match_rejected") == []
    assert site.handle(report(site.uid)) == "applied"
    assert site.handle(report(site.uid)) is None  # the very same signed report again: a replay
    refused = [b["error"] for b in site.kinds("rejected_message")]
    assert refused == ["SignatureError"] * 4 + ["MisaddressedError", "ReplayError", "ReplayError"]
    assert len(site.answers) == 1 and site.negatives() == 1
    # the ids taken survive a restart: a new handler on the same data dir refuses the replay too
    again = DeviceReports(DEVICE, site.log, 24.0, 100, lambda *_a: None, lambda *_a: None)
    assert "ab" * 16 in again.seen.ids


def test_a_report_signed_by_a_revoked_hub_key_is_refused(site: Site, tmp_path: Path) -> None:
    """The agent checks against its keyring (sync.hubkeys): once a rotation revoked HUB, a report
    that HUB signed is refused like one from a stranger."""
    new = Ed25519PrivateKey.generate()
    ring = HubKeyring.open(tmp_path / "ring", HUB.public_key())
    rotation = {"v": 1, "type": "key_rotation", "new_key": raw_public(new.public_key()).hex(), "new_key_id": signing.key_id(new.public_key()),
                "revoke": [signing.key_id(HUB.public_key())], "created": int(time.time())}
    ring.receive(protocol.encode(signing.sign(rotation, ROTATION_DOMAIN, HUB)))
    topic = protocol.device_topic(DEVICE, protocol.REPORT)
    assert site.reports.handle(site.store, topic, report(site.uid), ring) is None
    assert [b["error"] for b in site.kinds("rejected_message")] == ["SignatureError"] and site.negatives() == 0 and site.answers == []
    assert site.reports.handle(site.store, topic, report(site.uid, key=new), ring) == "applied"


def test_a_report_without_a_kept_probe_or_for_someone_else_is_refused_with_why(tmp_path: Path) -> None:
    off = Site(tmp_path / "off", keep_h=0.0)
    try:
        assert off.handle(report(off.uid)) == "refused"
        assert off.answers[-1][1]["code"] == "probes_off" and off.negatives() == 0
    finally:
        off.close()
    gone = Site(tmp_path / "gone", keep_probe=False)
    try:
        assert gone.handle(report(gone.uid)) == "refused"
        assert gone.answers[-1][1]["code"] == "probe_expired" and gone.negatives() == 0
        assert gone.handle(report("ee" * 16, report_id="ef" * 16)) == "refused"
        assert gone.answers[-1][1]["code"] == "person_mismatch"
        assert gone.kinds("match_rejected") == []
    finally:
        gone.close()


def test_a_report_on_a_gallery_locked_elsewhere_is_answered_refused_and_changes_nothing(site: Site) -> None:
    """A bulk `gallery enroll` holding the write lock past SQLite's wait: the report is answered
    `gallery_error` (the operator reports again), never left unanswered, and nothing is written."""
    import sqlite3

    from edge.gallery.db import GALLERY_FILE

    other = sqlite3.connect(Path(site.log.path).parent / GALLERY_FILE, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        assert site.handle(report(site.uid)) == "refused"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert site.answers[-1][1]["code"] == "gallery_error" and site.negatives() == 0 and site.kinds("match_rejected") == []
