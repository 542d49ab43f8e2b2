"""Issue 18, part A, written as an attacker would: a stranger must never become a staff member
through an enrollment upload. Forged, re-addressed, altered and unaudited uploads are refused with
nothing stored; honest uploads that resemble someone (same name, close face) are held for an admin
and never touch the employee; the groups an upload asks for are capped to the device's enroll
groups; approve (merge / as new), reject and re-sends behave; and a real `facegate hub serve`
refuses a forged upload published with paho, alerts, and goes on with the next valid one."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.audit.records import AuditRecord
from edge.config import HubConfig
from edge.errors import ProtocolError
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile, new_uid
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity
from sync import protocol
from sync.hub.review import ReviewError, ReviewQueue, accept_upload
from sync.hub.service import Hub
from sync.hub.store import HubStore
from sync.hub.uploads import UploadError, UploadNotAuditedError
from sync.uploads import enrollment_message
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL = "edgeface_xs_int8"  # calibrated in models/thresholds.toml: the close-face check applies
DIM = 512
EMPLOYEE = "Alice Employee"


def face(seed: int, noise: float = 0.0, of: int | None = None) -> np.ndarray:
    """A random 512-d face; with `of`, that face plus a little noise (the same person again)."""
    base = np.random.default_rng(seed if of is None else of).standard_normal(DIM)
    if of is not None:
        base = base + noise * np.random.default_rng(seed).standard_normal(DIM)
    return base.astype(np.float32)


@dataclass
class Kiosk:
    name: str
    data_dir: Path
    kek: bytes
    ident: DeviceIdentity
    log: AuditLog
    sent: int = 0  # audit records delivered to the hub so far

    def enroll(self, name: str, vectors: list[np.ndarray], groups: tuple[str, ...] = ()) -> tuple[str, AuditRecord]:
        with GalleryStore.open(self.data_dir, self.kek) as store:
            record = store.enroll(PersonProfile(name=name, groups=groups, consent_text="I agree"), vectors, [0.7] * len(vectors), MODEL)
        return record.uid, self.log.append("enroll", {"person_uid": record.uid, "templates": len(vectors), "by": "kiosk"})

    def audit_batch(self) -> bytes:
        records = self.log.since(self.sent, 1000)
        self.sent = records[-1].seq
        return protocol.encode({"v": 1, "type": "audit", "device": self.name, "records": [r.to_dict() for r in records]})

    def upload(self, hub: Hub, uid: str, record: AuditRecord, key: Ed25519PrivateKey | None = None, device: str | None = None) -> bytes:
        with GalleryStore.open(self.data_dir, self.kek) as store:
            text = enrollment_message(store, device or self.name, uid, record.seq, hub.identity.sealing_key.public_key(),
                                      key or self.ident.signing_key, record.hash)
        assert text is not None
        return text.encode()


def _kiosk(tmp_path: Path, hub: Hub, name: str, enroll_groups: tuple[str, ...] | None = ("shop",)) -> Kiosk:
    data_dir, kek, ident = new_device(tmp_path, name)
    hub.store.add_device(name, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("shop",), enroll_groups)
    return Kiosk(name, data_dir, kek, ident, AuditLog.open(data_dir))


@pytest.fixture
def hub(tmp_path: Path):
    h = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    employee = SyncPerson(new_uid(), PersonProfile(name=EMPLOYEE, groups=("staff",)), MODEL, (face(1),), (0.9,))
    h.store.add_person(employee)
    yield h
    h.close()


def _employee(hub: Hub) -> SyncPerson:
    return next(p for p in hub.store.persons() if p.profile.name == EMPLOYEE)


def _deliver(hub: Hub, kiosk: Kiosk, uid: str, record: AuditRecord, **kw) -> object:
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    return accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid, record, **kw), hub.identity.sealing_key)


def _summary(persons: list[SyncPerson]) -> list[tuple[str, str, tuple[str, ...], bytes]]:
    return [(p.uid, p.profile.name, p.profile.groups, np.concatenate(p.embeddings).tobytes()) for p in persons]


def _nothing_stored(hub: Hub, before: list[SyncPerson]) -> None:
    assert _summary(hub.store.persons()) == _summary(before)
    assert ReviewQueue(hub.store).items(all_states=True) == []


# -- refused before anything is opened ------------------------------------------------------------

def test_unsigned_upload_is_refused(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    uid, record = kiosk.enroll("Mallory", [face(7)])
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    message = json.loads(kiosk.upload(hub, uid, record))
    before = hub.store.persons()
    del message["sig"]
    with pytest.raises(ProtocolError, match="missing field"):
        accept_upload(hub.store, kiosk.name, protocol.encode(message), hub.identity.sealing_key)
    message["sig"] = "00" * 64
    with pytest.raises(UploadError, match="signature"):
        accept_upload(hub.store, kiosk.name, protocol.encode(message), hub.identity.sealing_key)
    _nothing_stored(hub, before)


def test_upload_signed_by_another_registered_device_is_refused(tmp_path: Path, hub: Hub) -> None:
    kiosk, other = _kiosk(tmp_path, hub, "kiosk-1"), _kiosk(tmp_path, hub, "kiosk-2")
    uid, record = kiosk.enroll("Mallory", [face(7)])
    before = hub.store.persons()
    with pytest.raises(UploadError, match="signature"):
        _deliver(hub, kiosk, uid, record, key=other.ident.signing_key)
    _nothing_stored(hub, before)


def test_message_device_must_be_the_topic_device(tmp_path: Path, hub: Hub) -> None:
    kiosk, other = _kiosk(tmp_path, hub, "kiosk-1"), _kiosk(tmp_path, hub, "kiosk-2")
    uid, record = kiosk.enroll("Mallory", [face(7)])
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    payload = kiosk.upload(hub, uid, record)
    before = hub.store.persons()
    with pytest.raises(UploadError, match="claims device"):
        accept_upload(hub.store, other.name, payload, hub.identity.sealing_key)  # kiosk-1's upload replayed on kiosk-2's topic
    with pytest.raises(UploadError, match="unregistered"):
        accept_upload(hub.store, "rogue", payload, hub.identity.sealing_key)
    _nothing_stored(hub, before)


def test_altered_sealed_payload_is_refused(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    uid, record = kiosk.enroll("Mallory", [face(7)])
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    message = json.loads(kiosk.upload(hub, uid, record))
    blob = bytearray(base64.b64decode(message["sealed"]))
    blob[-1] ^= 1
    message["sealed"] = base64.b64encode(bytes(blob)).decode()
    before = hub.store.persons()
    with pytest.raises(UploadError, match="signature"):
        accept_upload(hub.store, kiosk.name, protocol.encode(message), hub.identity.sealing_key)
    _nothing_stored(hub, before)


def test_upload_must_match_the_hubs_audit_record(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    uid, record = kiosk.enroll("Mallory", [face(7)])
    before = hub.store.persons()
    with pytest.raises(UploadNotAuditedError):  # the record has not reached the hub yet: the device re-sends
        accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid, record), hub.identity.sealing_key)
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    forged = AuditRecord(record.seq, record.ts_us, record.kind, record.body, record.prev, "ab" * 32, record.sig)
    with pytest.raises(UploadError, match="does not match"):  # signed by the device, but naming another record
        accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid, forged), hub.identity.sealing_key)
    decision = kiosk.log.append("decision", {"person_uid": uid})
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    with pytest.raises(UploadError, match="does not match"):  # an existing record, not an enroll
        accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid, decision), hub.identity.sealing_key)
    _nothing_stored(hub, before)


# -- honest uploads: never merged on their own ----------------------------------------------------

def test_same_name_upload_is_held_and_the_employee_is_untouched(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    employee = _employee(hub)
    uid, record = kiosk.enroll(" alice  EMPLOYEE ", [face(66)], groups=("staff",))
    outcome = _deliver(hub, kiosk, uid, record)
    assert outcome.action == "review"
    [(item, held)] = ReviewQueue(hub.store).items()
    assert item.reasons == ({"why": "same_name", "uid": employee.uid},) and held.uid == uid
    assert _summary([_employee(hub)]) == _summary([employee])  # no new template
    staff = hub.store.persons(("staff",))
    assert [p.uid for p in staff] == [employee.uid] and len(staff[0].embeddings) == 1  # what the staff door is pushed
    [bundle] = hub.bundles(group="shop")
    assert bundle.persons == 0
    assert hub.store.find_person(EMPLOYEE) == employee.uid
    assert [h["action"] for h in ReviewQueue(hub.store).history()] == ["upload.review"]


def test_face_close_upload_under_another_name_is_held(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    employee = _employee(hub)
    uid, record = kiosk.enroll("Totally Someone Else", [face(99, noise=0.3, of=1)])
    assert _deliver(hub, kiosk, uid, record).action == "review"
    [(item, _held)] = ReviewQueue(hub.store).items()
    [reason] = item.reasons
    assert reason["why"] == "close_face" and reason["uid"] == employee.uid and reason["score"] >= reason["threshold"]
    assert _summary([_employee(hub)]) == _summary([employee])


def test_uploaders_groups_are_capped_to_the_devices_enroll_groups(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1", enroll_groups=("shop",))
    uid, record = kiosk.enroll("New Customer", [face(5)], groups=("staff", "shop"))
    assert _deliver(hub, kiosk, uid, record).action == "person"
    [new] = [p for p in hub.store.persons() if p.uid == uid]
    assert new.profile.groups == ("shop",) and new.profile.consent_text == "I agree"
    assert uid not in {p.uid for p in hub.store.persons(("staff",))}
    # No groups asked: the device's enroll groups. A device without enroll groups gives none.
    uid2, record2 = kiosk.enroll("Second Customer", [face(6)])
    _deliver(hub, kiosk, uid2, record2)
    assert next(p for p in hub.store.persons() if p.uid == uid2).profile.groups == ("shop",)
    bare = _kiosk(tmp_path, hub, "kiosk-bare", enroll_groups=None)
    uid3, record3 = bare.enroll("Third Customer", [face(8)], groups=("staff",))
    _deliver(hub, bare, uid3, record3)
    assert next(p for p in hub.store.persons() if p.uid == uid3).profile.groups == ()


def test_resent_upload_is_acked_again_without_a_second_item(tmp_path: Path, hub: Hub) -> None:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    uid, record = kiosk.enroll(EMPLOYEE, [face(66)])
    first = _deliver(hub, kiosk, uid, record)
    again = accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid, record), hub.identity.sealing_key)
    assert (first.action, again.action, again.review_id) == ("review", "resent", first.review_id)
    assert len(ReviewQueue(hub.store).items(all_states=True)) == 1
    uid2, record2 = kiosk.enroll("Fresh Customer", [face(12)])
    _deliver(hub, kiosk, uid2, record2)
    assert accept_upload(hub.store, kiosk.name, kiosk.upload(hub, uid2, record2), hub.identity.sealing_key).action == "resent"
    assert sum(p.uid == uid2 for p in hub.store.persons()) == 1


# -- the admin decides ------------------------------------------------------------------------------

def _held(tmp_path: Path, hub: Hub, name: str = EMPLOYEE, groups: tuple[str, ...] = ("staff", "shop")) -> tuple[ReviewQueue, int, str]:
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    uid, record = kiosk.enroll(name, [face(66), face(67)], groups=groups)
    outcome = _deliver(hub, kiosk, uid, record)
    return ReviewQueue(hub.store), outcome.review_id, uid


def test_approve_merge_adds_templates_and_keeps_the_persons_profile(tmp_path: Path, hub: Hub) -> None:
    employee = _employee(hub)
    queue, item, _uid = _held(tmp_path, hub)
    assert queue.approve_merge(item, employee.uid) == employee.uid
    merged = _employee(hub)
    assert merged.profile == employee.profile and len(merged.embeddings) == 3
    [(entry, held)] = queue.items(all_states=True)
    assert (entry.state, entry.outcome_uid, held) == ("merged", employee.uid, None)  # the held copy is gone
    with pytest.raises(ReviewError, match="already decided"):
        queue.reject(item)


def test_approve_as_new_caps_groups_and_refuses_a_duplicate_name(tmp_path: Path, hub: Hub) -> None:
    queue, item, uid = _held(tmp_path, hub)
    with pytest.raises(ProtocolError.__mro__[1]):  # FacegateError: a person named so already exists
        queue.approve_new(item)
    assert queue.approve_new(item, name="Alice the Customer") == uid
    new = next(p for p in hub.store.persons() if p.uid == uid)
    assert new.profile.name == "Alice the Customer" and new.profile.groups == ("shop",)
    assert len(_employee(hub).embeddings) == 1
    assert [h["action"] for h in queue.history()] == ["upload.review", "review.new"]


def test_reject_crypto_erases_the_held_upload(tmp_path: Path, hub: Hub) -> None:
    before = hub.store.persons()
    queue, item, uid = _held(tmp_path, hub)
    queue.reject(item)
    assert _summary(hub.store.persons()) == _summary(before)
    rows = hub.store.db.execute("SELECT wrapped_key, sealed, state FROM reviews WHERE id=?", (item,))
    assert rows == [(None, None, "rejected")]
    assert queue.items() == []


def test_enroll_groups_survive_a_re_add_and_old_databases_migrate(tmp_path: Path) -> None:
    store = HubStore.open("", tmp_path / "old", b"k" * 32)
    store.db.execute("DROP TABLE devices")
    store.db.execute("CREATE TABLE devices (id TEXT PRIMARY KEY, sign_pub TEXT NOT NULL, seal_pub TEXT NOT NULL, groups_json TEXT NOT NULL,"
                     " added BIGINT NOT NULL, audit_seq BIGINT NOT NULL, audit_hash TEXT NOT NULL, status_json TEXT NOT NULL, last_seen BIGINT NOT NULL)")
    store.db.execute("INSERT INTO devices VALUES ('old-1', ?, ?, '[]', 0, 0, ?, '{}', 0)", ("a" * 64, "b" * 64, "0" * 64))
    store.close()
    store = HubStore.open("", tmp_path / "old", b"k" * 32)
    assert store.device("old-1").enroll_groups == ()
    store.add_device("old-1", "a" * 64, "b" * 64, (), ("shop",))
    store.add_device("old-1", "c" * 64, "b" * 64, ())  # re-keyed: enroll groups kept
    assert store.device("old-1").enroll_groups == ("shop",) and store.device("old-1").sign_pub == "c" * 64
    store.close()


# -- real processes: mosquitto + `facegate hub serve` + a forger with paho ------------------------

def test_served_hub_refuses_a_forged_upload_and_takes_the_next_valid_one(broker: Broker, tmp_path: Path) -> None:
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_port = {broker.port}\nclient_id = "hub-1"\n')
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port))
    employee = SyncPerson(new_uid(), PersonProfile(name=EMPLOYEE, groups=("staff",)), MODEL, (face(1),), (0.9,))
    hub.store.add_person(employee)
    kiosk = _kiosk(tmp_path, hub, "kiosk-1")
    forged_uid, forged_record = kiosk.enroll(EMPLOYEE, [face(66)], groups=("staff",))
    valid_uid, valid_record = kiosk.enroll("Walk-in Customer", [face(77)])
    audit = kiosk.audit_batch()
    forged = kiosk.upload(hub, forged_uid, forged_record, key=Ed25519PrivateKey.generate())  # the forger has no device key
    valid = kiosk.upload(hub, valid_uid, valid_record)
    acked: list[dict] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = lambda _c, _u, m: acked.append(json.loads(m.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.subscribe(protocol.device_topic(kiosk.name, protocol.ACK), qos=1)
    serve = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Until the hub has subscribed, a publish reaches nobody: resend (the hub skips duplicates).
        for _ in range(30):
            client.publish(protocol.device_topic(kiosk.name, protocol.AUDIT), audit, qos=1).wait_for_publish(10)
            if wait_for(lambda: any(a.get("audit_upto") == kiosk.sent for a in acked), 2.0):
                break
        assert any(a.get("audit_upto") == kiosk.sent for a in acked), "the hub never acked the audit batch"
        client.publish(protocol.device_topic(kiosk.name, protocol.ENROLL), forged, qos=1).wait_for_publish(10)
        client.publish(protocol.device_topic(kiosk.name, protocol.ENROLL), valid, qos=1).wait_for_publish(10)
        assert wait_for(lambda: any(valid_uid in a.get("enrollments", []) for a in acked), 30.0), "the valid upload was not acked"
        assert not any(forged_uid in a.get("enrollments", []) for a in acked)
        alerts = [a for a in hub.store.alerts() if a[1] == kiosk.name]
        assert len(alerts) == 1 and "signature" in alerts[0][2], alerts
        assert {p.uid for p in hub.store.persons()} == {employee.uid, valid_uid}
        assert _summary([_employee(hub)]) == _summary([employee]) and ReviewQueue(hub.store).items() == []
        assert serve.poll() is None
    finally:
        client.disconnect()
        client.loop_stop()
        serve.terminate()
        serve.communicate(timeout=30)
        hub.close()
