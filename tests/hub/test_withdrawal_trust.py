"""Kiosk consent withdrawals at the hub, written as an attacker would: a withdrawal erases a
person only when the device that audited it signed it; forged, re-addressed, unaudited and
mismatched ones are refused with nothing erased; a valid one erases the person (and their held
review item), owes the erasure to every device and is idempotent; and a real `facegate hub
serve` refuses a forged withdrawal published with paho and acts on the valid one, pushing the
erase to the fleet."""

from __future__ import annotations

import json
import subprocess
import sys
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
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile, new_uid
from sync import protocol
from sync.bundle import open_bundle
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub
from sync.hub.uploads import UploadError, UploadNotAuditedError
from sync.hub.withdrawals import apply_withdrawal, check_withdrawal, is_withdrawal
from sync.withdrawals import withdrawal_message
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL = "edgeface_xs_int8"


def _person(name: str) -> SyncPerson:
    return SyncPerson(new_uid(), PersonProfile(name=name, groups=("shop",)), MODEL, (np.random.default_rng(len(name)).standard_normal(512).astype(np.float32),), (0.9,))


class _Device:
    def __init__(self, tmp_path: Path, hub: Hub, name: str) -> None:
        data_dir, _kek, self.ident = new_device(tmp_path, name)
        hub.store.add_device(name, self.ident.public()["sign_public_key"], self.ident.public()["seal_public_key"], ("shop",))
        self.name, self.log, self.sent = name, AuditLog.open(data_dir), 0

    def withdraw(self, uid: str, by: str = "kiosk-withdrawal") -> AuditRecord:
        return self.log.append("remove", {"person_uid": uid, "by": by, "client": "ab" * 8})

    def audit_batch(self) -> bytes:
        records = self.log.since(self.sent, 1000)
        self.sent = records[-1].seq
        return protocol.encode({"v": 1, "type": "audit", "device": self.name, "records": [r.to_dict() for r in records]})

    def message(self, record: AuditRecord, key: Ed25519PrivateKey | None = None, device: str | None = None) -> bytes:
        found = withdrawal_message(device or self.name, record, key or self.ident.signing_key)
        assert found is not None
        return found[1].encode()


@pytest.fixture
def hub(tmp_path: Path):
    h = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    yield h
    h.close()


def _live(hub: Hub) -> set[str]:
    return {p.uid for p in hub.store.persons()}


def test_forged_readdressed_and_mismatched_withdrawals_are_refused(tmp_path: Path, hub: Hub) -> None:
    ann, bob = _person("Ann Customer"), _person("Bob Customer")
    hub.store.add_person(ann)
    hub.store.add_person(bob)
    kiosk, other = _Device(tmp_path, hub, "kiosk-1"), _Device(tmp_path, hub, "kiosk-2")
    record = kiosk.withdraw(ann.uid)
    valid = kiosk.message(record)
    assert is_withdrawal(valid) and not is_withdrawal(b'{"type":"enrollment"}') and not is_withdrawal(b"\xff")
    with pytest.raises(UploadNotAuditedError, match="does not hold yet"):
        check_withdrawal(hub.store, "kiosk-1", valid)  # the audit record has not arrived: refused, resent later
    hub.store.ingest_audit("kiosk-1", kiosk.audit_batch())
    with pytest.raises(UploadError, match="forged or altered"):
        check_withdrawal(hub.store, "kiosk-1", kiosk.message(record, key=Ed25519PrivateKey.generate()))  # not the device's key
    with pytest.raises(UploadError, match="forged or altered"):
        check_withdrawal(hub.store, "kiosk-1", kiosk.message(record, key=other.ident.signing_key))  # another registered device's key
    with pytest.raises(UploadError, match="claims to come from"):
        check_withdrawal(hub.store, "kiosk-2", valid)  # kiosk-1's genuine message replayed on kiosk-2's topic
    with pytest.raises(UploadError, match="unregistered"):
        check_withdrawal(hub.store, "nobody", kiosk.message(record, device="nobody"))
    altered = json.loads(valid)
    altered["uid"] = bob.uid
    with pytest.raises(UploadError, match="forged or altered"):
        check_withdrawal(hub.store, "kiosk-1", json.dumps(altered).encode())
    # Signed by the device, but naming a record that is not a kiosk withdrawal of that person.
    cli_remove = kiosk.withdraw(bob.uid, by="cli")
    hub.store.ingest_audit("kiosk-1", kiosk.audit_batch())
    forged = {"v": 1, "type": "withdrawal", "device": "kiosk-1", "uid": bob.uid, "audit_seq": cli_remove.seq, "audit_hash": cli_remove.hash}
    from sync.withdrawals import withdrawal_signed_bytes

    forged["sig"] = kiosk.ident.signing_key.sign(withdrawal_signed_bytes(forged)).hex()
    with pytest.raises(UploadError, match="does not match"):
        check_withdrawal(hub.store, "kiosk-1", protocol.encode(forged))
    with pytest.raises(protocol.SchemaError):
        check_withdrawal(hub.store, "kiosk-1", protocol.encode({k: v for k, v in json.loads(valid).items() if k != "sig"}))
    # A genuine, audited withdrawal of someone this kiosk never held (another group): refused.
    staff = SyncPerson(new_uid(), PersonProfile(name="Carol Staff", groups=("staff",)), MODEL, ann.embeddings, (0.9,))
    hub.store.add_person(staff)
    elsewhere = kiosk.withdraw(staff.uid)
    hub.store.ingest_audit("kiosk-1", kiosk.audit_batch())
    with pytest.raises(UploadError, match="in none of its groups"):
        check_withdrawal(hub.store, "kiosk-1", kiosk.message(elsewhere))
    assert _live(hub) == {ann.uid, bob.uid, staff.uid} and hub.store.erasures() == []  # nothing was erased by any of them
    message = check_withdrawal(hub.store, "kiosk-1", valid)
    assert message["uid"] == ann.uid


def test_a_valid_withdrawal_erases_once_and_is_owed_to_every_device(tmp_path: Path, hub: Hub) -> None:
    ann, bob = _person("Ann Customer"), _person("Bob Customer")
    hub.store.add_person(ann)
    hub.store.add_person(bob)
    kiosk, _door = _Device(tmp_path, hub, "kiosk-1"), _Device(tmp_path, hub, "door-2")
    record = kiosk.withdraw(ann.uid)
    hub.store.ingest_audit("kiosk-1", kiosk.audit_batch())
    message = check_withdrawal(hub.store, "kiosk-1", kiosk.message(record))
    assert apply_withdrawal(hub.store, "kiosk-1", message)
    assert _live(hub) == {bob.uid}
    assert sorted((u, d, c) for u, d, _r, c in hub.store.erasures()) == [(ann.uid, "door-2", None), (ann.uid, "kiosk-1", None)]
    history = [h for h in ReviewQueue(hub.store).history() if h["action"] == "erase"]
    assert history == [{"at": history[0]["at"], "action": "erase", "subject": ann.uid,
                        "detail": {"by": "kiosk-withdrawal", "device": "kiosk-1", "audit_seq": record.seq, "devices": 2}}]
    # The next bundles carry the erase to every device.
    (bundle,) = hub.bundles()  # both devices are in group shop
    content = open_bundle(bundle.payload, bundle.topic, hub.identity.signing_key.public_key(), "kiosk-1", kiosk.ident.sealing_key)
    assert ann.uid in content.erases and [p.uid for p in content.upserts] == [bob.uid]
    assert not apply_withdrawal(hub.store, "kiosk-1", message)  # delivered again: nothing left to erase
    assert len([h for h in ReviewQueue(hub.store).history() if h["action"] == "erase"]) == 1


# -- real processes: mosquitto + `facegate hub serve` + paho as the kiosk and as a forger ------------

def test_served_hub_refuses_a_forged_withdrawal_and_erases_on_the_valid_one(broker: Broker, tmp_path: Path) -> None:
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_port = {broker.port}\nclient_id = "hub-1"\n')
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port))
    ann, bob = _person("Ann Customer"), _person("Bob Customer")
    hub.store.add_person(ann)
    hub.store.add_person(bob)
    kiosk = _Device(tmp_path, hub, "kiosk-1")
    forged_record, valid_record = kiosk.withdraw(bob.uid), kiosk.withdraw(ann.uid)
    audit = kiosk.audit_batch()
    forged, valid = kiosk.message(forged_record, key=Ed25519PrivateKey.generate()), kiosk.message(valid_record)
    acked: list[dict] = []
    bundles: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kiosk-1", protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = lambda _c, _u, m: (bundles if m.topic.endswith("/gallery") else acked).append(m.payload)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.subscribe([(protocol.device_topic(kiosk.name, protocol.ACK), 1), (protocol.group_gallery_topic("shop"), 1)])
    serve = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def acks() -> list[dict]:
        return [json.loads(a) for a in acked]

    try:
        for _ in range(30):  # until the hub has subscribed, a publish reaches nobody
            client.publish(protocol.device_topic(kiosk.name, protocol.AUDIT), audit, qos=1).wait_for_publish(10)
            if wait_for(lambda: any(a.get("audit_upto") == kiosk.sent for a in acks()), 2.0):
                break
        client.publish(protocol.device_topic(kiosk.name, protocol.ENROLL), forged, qos=1).wait_for_publish(10)
        client.publish(protocol.device_topic(kiosk.name, protocol.ENROLL), valid, qos=1).wait_for_publish(10)
        assert wait_for(lambda: any(ann.uid in a.get("enrollments", []) for a in acks()), 30.0), "the valid withdrawal was not acked"
        assert not any(bob.uid in a.get("enrollments", []) for a in acks())
        assert _live(hub) == {bob.uid}  # Ann erased, Bob (the forged one) untouched
        alerts = [a for a in hub.store.alerts() if a[1] == kiosk.name]
        assert len(alerts) == 1 and "signature" in alerts[0][2], alerts
        topic, key = protocol.group_gallery_topic("shop"), hub.identity.signing_key.public_key()
        assert wait_for(lambda: any(ann.uid in open_bundle(b, topic, key, "kiosk-1", kiosk.ident.sealing_key).erases for b in bundles), 30.0)
        assert serve.poll() is None
    finally:
        client.disconnect()
        client.loop_stop()
        serve.terminate()
        serve.communicate(timeout=30)
        hub.close()


def test_a_withdrawal_rejects_the_persons_held_upload(tmp_path: Path, hub: Hub) -> None:
    from tests.hub.test_upload_trust import EMPLOYEE, _deliver, _kiosk, face

    hub.store.add_person(SyncPerson(new_uid(), PersonProfile(name=EMPLOYEE, groups=("staff",)), MODEL, (face(1),), (0.9,)))
    kiosk = _kiosk(tmp_path, hub, "kiosk-9")
    uid, record = kiosk.enroll(EMPLOYEE, [face(66)])  # the same name as the employee: held for an admin
    assert _deliver(hub, kiosk, uid, record).action == "review"
    ((item, _held),) = ReviewQueue(hub.store).items()
    withdrawn = kiosk.log.append("remove", {"person_uid": uid, "by": "kiosk-withdrawal", "client": "ab" * 8})
    hub.store.ingest_audit(kiosk.name, kiosk.audit_batch())
    found = withdrawal_message(kiosk.name, withdrawn, kiosk.ident.signing_key)
    assert found is not None
    message = check_withdrawal(hub.store, kiosk.name, found[1].encode())
    assert not apply_withdrawal(hub.store, kiosk.name, message)  # no live person to erase ...
    assert ReviewQueue(hub.store).items() == []  # ... but the held face is gone (rejected: key and sealed row destroyed)
    assert hub.store.db.execute("SELECT state, wrapped_key, sealed FROM reviews WHERE id=?", (item.id,)) == [("rejected", None, None)]
    assert [h["detail"]["by"] for h in ReviewQueue(hub.store).history() if h["action"] in ("erase", "review.rejected")] == ["kiosk-withdrawal"] * 2


def test_the_outbox_sends_the_withdrawal_after_its_record_instead_of_a_waiting_upload(tmp_path: Path) -> None:
    """A customer who enrolled and withdrew before the hub heard of either: the enrollment upload
    (their face, sealed) never leaves the device; the signed withdrawal follows its audit record."""
    from sync.outbox import AUDIT, ENROLLMENT, Outbox
    from sync.uploads import outbox_upload

    data_dir, _kek, ident = new_device(tmp_path, "kiosk-1")
    uid = new_uid()
    with AuditLog.open(data_dir) as log, Outbox.open(data_dir) as outbox:
        enroll = log.append("enroll", {"person_uid": uid, "templates": 1, "by": "kiosk:feedbeef"})

        def upload(record: AuditRecord):
            if record.kind == "enroll":
                return uid, '{"type":"enrollment","sealed":"face"}'  # what enrollment_message would queue
            return outbox_upload(None, "kiosk-1", record, None, ident.signing_key)  # type: ignore[arg-type]

        outbox.feed_audit(log, upload)
        removed = log.append("remove", {"person_uid": uid, "by": "kiosk-withdrawal", "client": "ab" * 8})
        outbox.feed_audit(log, upload)
        rows = outbox.pending(0, 100)
    assert [(r.kind, r.seq) for r in rows] == [(AUDIT, enroll.seq), (AUDIT, removed.seq), (ENROLLMENT, None)]
    message = json.loads(rows[-1].body)
    assert message["type"] == "withdrawal" and message["uid"] == uid and message["audit_hash"] == removed.hash
    assert rows[-1].ref == uid and "sealed" not in rows[-1].body
