"""Issue 18, hub → device control messages, written as an attacker would: with a plaintext broker
anyone can publish on `devices/<id>/ack`. A forged ack used to make the device delete audit
records the hub never got; the hub then saw a gap, took nothing more from that device and said
nothing. Now acks are signed by the hub for one device and checked against what the device sent
(sync/control.py): forged, foreign-key, replayed-from-another-device and too-far acks are refused,
audited and change nothing; a gap (rows gone from the outbox anyway) is one hub alert and a signed
resend request that brings the records through from the journal; and deleting the journal's last
records is caught by `facegate audit verify` against the hub's signed anchor.

Real mosquitto, real `facegate hub serve` processes and `facegate audit verify`; the device's
agent runs in-process (bench.harness.sync_helpers), as tests/sync does."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import Device, make_device
from edge.audit.anchor import read_anchor
from edge.audit.journal import AUDIT_FILE, AuditLog
from edge.config import HubConfig
from sync import protocol, signing
from sync.agent import SyncAgent
from sync.hub.ingest import ack_message
from sync.hub.service import Hub
from sync.outbox import OUTBOX_FILE, Outbox
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


class ServedHub:
    """`facegate hub serve` in its own process; `hub` is the same store and keys, read from here."""

    def __init__(self, root: Path, port: int) -> None:
        self.config = root / "hub.toml"
        self.config.write_text(f'[hub]\ndata_dir = "{root / "hub"}"\nbroker_port = {port}\nclient_id = "hub-1"\naudit_gap_grace_s = 2.0\n')
        self.hub = Hub(HubConfig(data_dir=str(root / "hub"), broker_port=port))
        self.sign_pub = root / "hub_sign_real.pub"
        self.sign_pub.write_text(self.hub.public_keys()["hub_sign_key"])
        self.proc: subprocess.Popen[str] | None = None

    def register(self, device: Device) -> None:
        public = device.identity.public()
        self.hub.store.add_device(device.cfg.sync.device_id, public["sign_public_key"], public["seal_public_key"], ("staff",))

    def start(self) -> ServedHub:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(self.config), "hub", "serve"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def stop(self) -> str:
        if self.proc is None:
            return ""
        self.proc.terminate()
        err = self.proc.communicate(timeout=30)[1]
        self.proc = None
        return err

    def chain(self, device_id: str) -> list[tuple[int, str]]:
        return [(r.seq, r.hash) for r in self.hub.store.audit_chain(device_id)]

    def alerts(self, device_id: str) -> list[str]:
        return [a[2] for a in self.hub.store.alerts() if a[1] == device_id]


class Attacker:
    """A paho client that can publish anywhere and listens where it is told."""

    def __init__(self, port: int) -> None:
        self.heard: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.heard.setdefault(msg.topic, []).append(bytes(msg.payload))

    def listen(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10)

    def got(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.heard.get(topic, []))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def served(broker: Broker, tmp_path: Path):
    served = ServedHub(tmp_path, broker.port)
    yield served
    served.stop()
    served.hub.close()


@pytest.fixture
def attacker(broker: Broker):
    a = Attacker(broker.port)
    yield a
    a.close()


def _device(served: ServedHub, tmp_path: Path, port: int, name: str = "door-1") -> Device:
    return make_device(tmp_path / name, port, name, hub_sign_key_file=str(served.sign_pub))


def _outbox_seqs(device: Device) -> list[int]:
    db = sqlite3.connect(device.data_dir / OUTBOX_FILE)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM messages WHERE kind='audit' ORDER BY seq")]
    finally:
        db.close()


def _rejected(log: AuditLog, error: str) -> list[dict]:
    return [r.body for r in log.since(0, 10_000) if r.kind == "rejected_message" and r.body["error"] == error]


def _decisions(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("decision", {"track": i, "outcome": "grant", "score": 0.7})


def _fed(agent: SyncAgent, log: AuditLog, device: Device) -> None:
    """Waits until every journal record is in the outbox (the agent is connected and sending)."""
    assert wait_for(lambda: _outbox_seqs(device)[-1:] == [log.last_seq()] and agent._connected.is_set(), 30)


def _complete(served: ServedHub, device: Device, log: AuditLog) -> bool:
    name = device.cfg.sync.device_id
    return served.chain(name) == [(r.seq, r.hash) for r in log.since(0, 10_000)] and _outbox_seqs(device) == []


# -- forged acks: refused, audited, nothing leaves the outbox ---------------------------------------

def test_forged_unsigned_ack_leaves_the_outbox_untouched_and_is_audited(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    device = _device(served, tmp_path, broker.port)
    served.register(device)
    agent, log = device.agent()  # the hub is away: records wait in the outbox
    try:
        _decisions(log, 6)
        _fed(agent, log, device)
        before = _outbox_seqs(device)
        ack = protocol.device_topic("door-1", protocol.ACK)
        attacker.publish(ack, protocol.encode({"v": 1, "type": "ack", "device": "door-1", "audit_upto": 6}))  # unsigned
        attacker.publish(ack, b'{"v":1,"type":"ack","audit_upto":6}')  # the pre-signing form
        assert wait_for(lambda: len(_rejected(log, "SignatureError")) == 1 and len(_rejected(log, "SchemaError")) == 1, 30)
        assert "not signed" in _rejected(log, "SignatureError")[0]["reason"]
        assert _outbox_seqs(device)[: len(before)] == before == [1, 2, 3, 4, 5, 6]
        assert read_anchor(device.data_dir) is None
        # The hub comes back: every record arrives, the refusals included; nothing was lost.
        served.start()
        assert wait_for(lambda: _complete(served, device, log), 60), (served.chain("door-1"), _outbox_seqs(device))
        assert served.alerts("door-1") == []
        assert read_anchor(device.data_dir).seq == log.last_seq()
    finally:
        agent.stop()
        log.close()


def test_ack_signed_by_another_key_is_refused(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    device = _device(served, tmp_path, broker.port)
    agent, log = device.agent()
    try:
        _decisions(log, 4)
        _fed(agent, log, device)
        forged = ack_message("door-1", Ed25519PrivateKey.generate(), audit_upto=4, anchor=(4, log.record(4).hash))
        attacker.publish(protocol.device_topic("door-1", protocol.ACK), forged)
        assert wait_for(lambda: len(_rejected(log, "SignatureError")) == 1, 30)
        assert "does not trust" in _rejected(log, "SignatureError")[0]["reason"]
        assert _outbox_seqs(device)[:4] == [1, 2, 3, 4] and read_anchor(device.data_dir) is None
    finally:
        agent.stop()
        log.close()


def test_ack_above_what_the_device_sent_is_refused(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    # Even a genuine hub signature (here: made with the hub's own key) may not ack records this
    # device never fed to its outbox: those would be deleted before they were ever sent.
    device = _device(served, tmp_path, broker.port)
    agent, log = device.agent()
    try:
        _decisions(log, 3)
        _fed(agent, log, device)
        ahead = ack_message("door-1", served.hub.identity.signing_key, audit_upto=40, anchor=(40, "ab" * 32))
        attacker.publish(protocol.device_topic("door-1", protocol.ACK), ahead)
        assert wait_for(lambda: len(_rejected(log, "AckAheadError")) == 1, 30)
        assert "up to 40, but this device sent only up to 3" in _rejected(log, "AckAheadError")[0]["reason"]
        assert _outbox_seqs(device)[:3] == [1, 2, 3] and read_anchor(device.data_dir) is None
    finally:
        agent.stop()
        log.close()


def test_real_hub_ack_replayed_to_another_device_is_refused(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    door1, door2 = _device(served, tmp_path, broker.port, "door-1"), _device(served, tmp_path, broker.port, "door-2")
    served.register(door1)
    served.register(door2)
    attacker.listen(protocol.device_topic("door-1", protocol.ACK))
    served.start()
    agent1, log1 = door1.agent()
    try:
        _decisions(log1, 5)
        assert wait_for(lambda: _complete(served, door1, log1), 60), "door-1's records never reached the hub"
        genuine = [p for p in attacker.got(protocol.device_topic("door-1", protocol.ACK)) if json.loads(p).get("audit_upto") == 5]
        assert genuine, "no hub ack for door-1 was heard"
    finally:
        agent1.stop()
        log1.close()
    served.stop()  # door-2's records now wait in its outbox
    agent2, log2 = door2.agent()
    try:
        _decisions(log2, 7)
        _fed(agent2, log2, door2)
        attacker.publish(protocol.device_topic("door-2", protocol.ACK), genuine[-1])
        assert wait_for(lambda: len(_rejected(log2, "MisaddressedError")) == 1, 30)
        assert "for device 'door-1', not for door-2" in _rejected(log2, "MisaddressedError")[0]["reason"]
        assert _outbox_seqs(door2)[:7] == list(range(1, 8)) and read_anchor(door2.data_dir) is None
        served.start()
        assert wait_for(lambda: _complete(served, door2, log2), 60), (served.chain("door-2"), _outbox_seqs(door2))
    finally:
        agent2.stop()
        log2.close()


# -- a gap: one alert, a signed resend request, the chain closes from the journal ---------------------

def test_gap_is_alerted_once_and_the_resend_request_brings_the_records(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    device = _device(served, tmp_path, broker.port)
    served.register(device)
    attacker.listen(protocol.device_topic("door-1", protocol.RESEND))
    served.start()
    agent, log = device.agent()
    try:
        _decisions(log, 5)
        assert wait_for(lambda: _complete(served, device, log), 60)
    finally:
        agent.stop()
    # Offline, records 6..14 are fed to the outbox, then rows 6..9 vanish (what a forged ack did).
    _decisions(log, 9)
    with Outbox.open(device.data_dir) as outbox:
        outbox.feed_audit(log, lambda _r: None)
    db = sqlite3.connect(device.data_dir / OUTBOX_FILE, isolation_level=None)
    db.execute("DELETE FROM messages WHERE kind='audit' AND seq BETWEEN 6 AND 9")
    db.close()
    assert _outbox_seqs(device) == list(range(10, 15))
    log.close()
    agent, log = device.agent()
    try:
        assert wait_for(lambda: _complete(served, device, log), 60), (served.chain("door-1"), _outbox_seqs(device))
        gap_alerts = [a for a in served.alerts("door-1") if "never arrived" in a]
        assert len(gap_alerts) == 1 and "records 6.. never arrived" in gap_alerts[0], served.alerts("door-1")
        [resend] = [json.loads(p) for p in attacker.got(protocol.device_topic("door-1", protocol.RESEND))]
        assert resend["device"] == "door-1" and resend["from_seq"] == 6
        signing.verify(resend, protocol.RESEND_DOMAIN, {resend["key_id"]: served.hub.identity.signing_key.public_key()}, "resend")
        served_again = [r.body for r in log.since(0, 1000) if r.kind == "sync"]
        assert served_again == [{"action": "audit_resend", "from_seq": 6, "records": 9}]
        assert served.proc is not None and served.proc.poll() is None
    finally:
        agent.stop()
        log.close()


def test_forged_resend_request_is_refused(served: ServedHub, attacker: Attacker, broker: Broker, tmp_path: Path) -> None:
    device = _device(served, tmp_path, broker.port)
    agent, log = device.agent()
    try:
        _decisions(log, 2)
        _fed(agent, log, device)
        forged = {"v": 1, "type": "resend", "device": "door-1", "from_seq": 1, "created": 0}
        attacker.publish(protocol.device_topic("door-1", protocol.RESEND), protocol.encode(forged))
        assert wait_for(lambda: len(_rejected(log, "SignatureError")) == 1, 30)
        assert [r.kind for r in log.since(0, 100)].count("sync") == 0
    finally:
        agent.stop()
        log.close()


# -- the journal's tail deleted: `facegate audit verify` names the hub's anchor ----------------------

def _verify(device: Device) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(device.config_file), "audit", "verify"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_truncated_journal_tail_fails_audit_verify_naming_the_anchor(served: ServedHub, broker: Broker, tmp_path: Path) -> None:
    device = _device(served, tmp_path, broker.port)
    served.register(device)
    served.start()
    agent, log = device.agent()
    try:
        _decisions(log, 8)
        assert wait_for(lambda: _complete(served, device, log), 60)
        assert wait_for(lambda: (read_anchor(device.data_dir) or read_anchor).seq == 8, 30)  # type: ignore[union-attr]
    finally:
        agent.stop()
        log.close()
    ok = _verify(device)
    assert ok.returncode == 0 and "matches the hub's anchor at record 8" in ok.stdout, ok.stdout + ok.stderr
    # The attacker with the file: drop the trigger, delete the last three records. The chain of
    # what is left still links, so only the anchor shows it.
    db = sqlite3.connect(device.data_dir / AUDIT_FILE, isolation_level=None)
    db.execute("DROP TRIGGER records_no_delete")
    db.execute("DELETE FROM records WHERE seq > 5")
    db.close()
    with AuditLog.open(device.data_dir) as journal:
        assert journal.verify().ok
    bad = _verify(device)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "journal truncated below the hub's anchor: it ends at record 5, but the hub acknowledged records up to 8" in bad.stdout
