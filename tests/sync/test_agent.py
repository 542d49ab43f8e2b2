"""The sync agent against a real mosquitto: audit out exactly once and in order through outages and
restarts, bundles in (applied, acked, replays and junk refused and audited), enrollments up,
Home Assistant discovery, and a device SIGKILLed mid-bundle."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, Device, Hub, make_device, person
from edge.gallery import admin
from edge.gallery.records import PersonProfile
from edge.gallery.store import GalleryStore
from sync import protocol

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def device(tmp_path: Path, broker: Broker) -> Device:
    return make_device(tmp_path, broker.port)


def _hub(device: Device, port: int) -> HubClient:
    return HubClient(port, {DEVICE: device.identity.signing_key.public_key()}, device.hub_seal, sign_key=device.hub.key)


def _online(hub: HubClient) -> None:
    """The agent's status says online only after its subscriptions went out on the same connection."""
    assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=20)


def test_audit_arrives_exactly_once_in_order_through_broker_outage_and_agent_restart(device: Device, broker: Broker) -> None:
    hub = _hub(device, broker.port)
    agent, log = device.agent()
    n, stop_at = 900, {300: "broker", 600: "agent"}
    try:
        for i in range(1, n + 1):
            log.append("decision", {"track": i, "outcome": "grant", "score": 0.61})
            if stop_at.get(i) == "broker":  # the broker dies while events flow, and comes back
                broker.kill()
                time.sleep(1.5)
                broker.start()
            elif stop_at.get(i) == "agent":  # the daemon restarts with records the hub has not acked
                hub.acking = False
                time.sleep(0.3)
                agent.stop()
                log.close()
                hub.acking = True
                agent, log = device.agent()
            time.sleep(0.002)
        assert hub.wait(lambda: len(hub.records[DEVICE]) >= n, timeout=40), len(hub.records[DEVICE])
        assert [r.seq for r in hub.records[DEVICE]] == list(range(1, n + 1))
        assert [r.hash for r in hub.records[DEVICE]] == [r.hash for r in log.tail(n)]
        assert hub.problems == []
        assert hub.wait(lambda: agent.queue_depth() == 0, timeout=10)
    finally:
        agent.stop()
        hub.close()


def test_bundles_apply_and_bad_ones_are_refused_and_audited(device: Device, broker: Broker) -> None:
    hub = _hub(device, broker.port)
    updates: list[int] = []
    agent, log = device.agent(on_gallery_update=updates.append)
    _online(hub)
    topic = protocol.device_topic(DEVICE, "gallery")
    recipients = {DEVICE: device.identity}
    scope = f"device:{DEVICE}"
    try:
        first = device.hub.bundle(scope, recipients, [person(i) for i in range(3)], full=True)
        hub.publish(topic, first)
        assert hub.wait(lambda: len(hub.gallery_acks) == 1)
        assert hub.gallery_acks[0]["ok"] and hub.gallery_acks[0]["gallery_version"] == 1 and updates == [1]
        hub.publish(protocol.group_gallery_topic("staff"), device.hub.bundle("group:staff", recipients, [person(9)], full=True))
        hub.publish(topic, first)  # replay
        device.hub.bundle(scope, recipients, [person(4)])  # seq 2, lost
        hub.publish(topic, device.hub.bundle(scope, recipients, [person(5)]))  # seq 3: a gap
        hub.publish(topic, first[: len(first) // 2])  # truncated
        hub.publish(topic, Hub().bundle(scope, recipients, [person(6)], full=True, seq=50))  # forged: another hub key
        hub.publish(topic, b"\x00\xffnot json")
        hub.publish(protocol.device_topic(DEVICE, "ack"), b'{"v":1,"type":"ack","audit_upto":-4}')
        assert hub.wait(lambda: len(hub.gallery_acks) == 7)
        assert [a["ok"] for a in hub.gallery_acks] == [True, True, False, False, False, False, False]
        assert hub.resyncs and hub.resyncs[0]["scope"] == scope and hub.resyncs[0]["have_seq"] == 1
        assert hub.wait(lambda: sum(r.kind == "rejected_message" for r in hub.records[DEVICE]) == 6)
        errors = [r.body["error"] for r in hub.records[DEVICE] if r.kind == "rejected_message"]
        assert errors == ["ReplayError", "SequenceGapError", "SchemaError", "SignatureError", "SchemaError", "SchemaError"]
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("gallery", {}).get("version") == 2)
        assert hub.status[DEVICE]["gallery"]["scopes"] == {scope: 1, "group:staff": 1}
        with GalleryStore.open(device.data_dir, device.kek) as store:
            assert sorted(p.uid for p in store.persons()) == sorted(person(i).uid for i in (0, 1, 2, 9))
        assert log.verify().ok
    finally:
        agent.stop()
        hub.close()


def test_local_enrollment_is_uploaded_sealed_to_the_hub(device: Device, broker: Broker) -> None:
    hub = _hub(device, broker.port)
    agent, log = device.agent()
    try:
        with GalleryStore.open(device.data_dir, device.kek) as store:
            profile = PersonProfile(name="Kiosk Customer", consent_at=1_700_000_000, consent_text="I agree to be recognised at this store", retention_days=30)
            record = store.enroll(profile, [np.ones(64, np.float32), np.full(64, 0.5, np.float32)], [0.7, 0.8], "kiosk_model")
        log.append("enroll", {"person_uid": record.uid, "templates": 2, "by": "kiosk"})
        assert hub.wait(lambda: len(hub.enrollments) == 1)
        message, [uploaded] = hub.enrollments[0]
        assert message["uid"] == record.uid and uploaded.profile == profile and uploaded.model == "kiosk_model"
        assert np.allclose(uploaded.embeddings[1], 0.5) and np.allclose(uploaded.qualities, (0.7, 0.8))
        assert hub.wait(lambda: agent.queue_depth() == 0)
    finally:
        agent.stop()
        hub.close()


def test_status_and_home_assistant_discovery(tmp_path: Path, broker: Broker) -> None:
    device = make_device(tmp_path, broker.port, homeassistant=True)
    seen: dict[str, bytes] = {}
    events: list[dict] = []  # every message on the device's events topic, in order
    events_topic = protocol.device_topic(DEVICE, protocol.EVENTS)

    def on_message(_c, _u, m) -> None:
        seen[m.topic] = bytes(m.payload)
        if m.topic == events_topic:
            events.append(json.loads(m.payload))

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher", protocol=MQTTProtocolVersion.MQTTv5)
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe([("homeassistant/#", 1), (f"{protocol.PREFIX}/devices/+/#", 1)])
    watcher.loop_start()
    agent, _log = device.agent()
    try:
        node = f"facegate_{DEVICE}"
        deadline = time.monotonic() + 10
        while f"homeassistant/sensor/{node}/last_decision/config" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        config = json.loads(seen[f"homeassistant/sensor/{node}/last_decision/config"])
        assert config["state_topic"] == protocol.device_topic(DEVICE, "ha/state") and config["device"]["identifiers"] == [node]
        status = json.loads(seen[protocol.device_topic(DEVICE, "status")])
        assert status["online"] is True and status["gallery"]["version"] == 0 and "uptime_s" in status
        # A step-up challenge goes out on the events topic too, and leaves Home Assistant's state alone.
        agent.publish_event({"challenge_id": "c1", "door": "front", "track_id": 3, "challenge": "turn"}, kind="challenge")
        agent.publish_event({"decision": "grant", "person_uid": "b2" * 16, "liveness": {"live": True, "score": 0.9}, "door": "front"})
        deadline = time.monotonic() + 10
        while (f"homeassistant/binary_sensor/{node}/door_front/config" not in seen or len(events) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        state = json.loads(seen[protocol.device_topic(DEVICE, "ha/state")])
        assert state["doors"] == {"front": "grant"} and state["liveness"] == "live" and state["last_person"] == "b2" * 16
        assert [(e["type"], e.get("challenge_id")) for e in events] == [("challenge", "c1"), ("event", None)]
    finally:
        agent.stop()
        watcher.loop_stop()


def _sync_process(device: Device) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(device.config_file), "sync", "run"], env=env, stderr=subprocess.PIPE)


def _state(device: Device) -> tuple[int, int, list[str]]:
    with GalleryStore.open(device.data_dir, device.kek) as store:
        return store.sync_state().version, len(store.persons()), admin.integrity_check(store)


def test_device_killed_mid_bundle_is_at_the_old_or_the_new_version(tmp_path: Path, broker: Broker) -> None:
    device = make_device(tmp_path, broker.port, session_expiry_s=3600)
    hub = _hub(device, broker.port)
    scope, topic = f"device:{DEVICE}", protocol.device_topic(DEVICE, "gallery")
    rng = random.Random(7)
    big = [person(i, n_templates=2, dim=512) for i in range(2100)]
    try:
        proc = _sync_process(device)
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=30)
        first = device.hub.bundle(scope, {DEVICE: device.identity}, big[:500], full=True)
        started = time.monotonic()
        hub.publish(topic, first)
        assert hub.wait(lambda: len(hub.gallery_acks) == 1, timeout=30)
        # kill times spread around the moment a 1,200-person bundle commits, so that some trials
        # die inside the transaction and some after it, on a fast machine or a slow one
        expected_s = (time.monotonic() - started) * 1200 / 500
        kills = 0
        for trial in range(3):
            before, persons_before, _ = _state(device)
            payload = device.hub.bundle(scope, {DEVICE: device.identity}, big[trial * 300 : trial * 300 + 1200], full=True)
            hub.publish(topic, payload)
            time.sleep(rng.uniform(0.4, 1.2) * expected_s)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            assert hub.wait(lambda: hub.status[DEVICE]["online"] is False)  # the LWT
            version, persons, problems = _state(device)
            assert problems == []
            assert (version, persons) in ((before, persons_before), (before + 1, 1200)), (trial, version, persons)
            proc = _sync_process(device)  # the broker redelivers the unacknowledged bundle
            assert hub.wait(lambda b=before: hub.status.get(DEVICE, {}).get("gallery", {}).get("version") == b + 1, timeout=60)
            assert _state(device)[:2] == (before + 1, 1200)
        assert kills == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        hub.close()


def test_tls_client_certificates_and_acl_keep_devices_to_their_own_topics(mosquitto: str, tmp_path: Path) -> None:
    from bench.harness.mqtt_broker import tls_material

    tls = tls_material(tmp_path / "pki", ["hub", DEVICE, "door-2"])
    with Broker(tmp_path / "tls-broker", tls=tls, acl={"hub": ["readwrite facegate/v1/#"], DEVICE: ["read facegate/v1/groups/staff/gallery"]}) as broker:
        cert, key = tls.clients[DEVICE]
        device = make_device(tmp_path, broker.port, tls_ca_file=str(tls.ca), tls_cert_file=str(cert), tls_key_file=str(key))
        hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key(), "door-2": device.identity.signing_key.public_key()},
                        tls=(str(tls.ca), *map(str, tls.clients["hub"])))
        agent, log = device.agent()
        try:
            log.append("decision", {"outcome": "grant"})
            assert hub.wait(lambda: len(hub.records[DEVICE]) == 1)
            # door-1's certificate used to impersonate door-2: the broker drops what the ACL forbids
            rogue_got: list[str] = []
            rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="rogue", protocol=MQTTProtocolVersion.MQTTv5)
            rogue.tls_set(ca_certs=str(tls.ca), certfile=str(cert), keyfile=str(key))
            rogue.on_message = lambda _c, _u, m: rogue_got.append(m.topic)
            rogue.connect("127.0.0.1", broker.port)
            rogue.loop_start()
            rogue.subscribe([(protocol.device_topic("door-2", "gallery"), 1), (protocol.group_gallery_topic("night"), 1)])
            forged = json.dumps({"v": 1, "type": "audit", "device": "door-2", "records": []}).encode()
            rogue.publish(protocol.device_topic("door-2", "audit"), forged, qos=1).wait_for_publish(5)
            hub.publish(protocol.device_topic("door-2", "gallery"), b"{}")
            hub.publish(protocol.group_gallery_topic("night"), b"{}")
            time.sleep(1.0)
            assert rogue_got == [] and hub.ingest.state.get("door-2") is None
            rogue.loop_stop()
            # no client certificate: refused
            anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=MQTTProtocolVersion.MQTTv5)
            anonymous.tls_set(ca_certs=str(tls.ca))
            try:
                anonymous.connect("127.0.0.1", broker.port)
                for _ in range(20):
                    anonymous.loop(0.1)
                refused = not anonymous.is_connected()
            except OSError:
                refused = True
            assert refused
        finally:
            agent.stop()
            hub.close()


def test_agent_thread_keeps_running_after_a_flood_of_junk(device: Device, broker: Broker) -> None:
    hub = _hub(device, broker.port)
    agent, _log = device.agent()
    _online(hub)
    try:
        agent._rejects.window_s = 1.0  # summaries due after a second, not a minute
        rng = random.Random(3)
        for _ in range(60):
            hub.publish(protocol.device_topic(DEVICE, rng.choice(["gallery", "ack"])), rng.randbytes(rng.randint(0, 200)))

        def rejected() -> list:
            return [r for r in hub.records[DEVICE] if r.kind == "rejected_message"]

        # Every refusal is accounted for, but a flood costs a bounded number of journal records.
        assert hub.wait(lambda: sum(r.body.get("suppressed", 1) for r in rejected()) == 60)
        assert len(rejected()) < 60 and any(r.body.get("suppressed") for r in rejected())
        assert agent._thread is not None and agent._thread.is_alive()
        agent.publish_event({"outcome": "unknown"})
        hub.publish(protocol.device_topic(DEVICE, "gallery"), device.hub.bundle(f"device:{DEVICE}", {DEVICE: device.identity}, [person(1)], full=True))
        assert hub.wait(lambda: any(a["ok"] for a in hub.gallery_acks))  # and still applies good bundles
    finally:
        agent.stop()
        hub.close()
