"""A device bounds every hub → device message by size before it parses it (issue 19), against a
real mosquitto: oversized bundles, acks, resend requests and key rotations are refused unparsed,
audited as `rejected_message` (PayloadTooLargeError) and, for bundles, nacked; what is far above
every bound the broker does not even deliver (MQTT v5 Maximum Packet Size); the agent goes on."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, Hub, make_device, person
from edge.audit.journal import AUDIT_FILE, AuditLog
from sync import protocol
from sync.inbound import Inbound
from tests.support.tmpfs import small_tmpfs

MIB = 1024 * 1024


def _too_large(log: AuditLog) -> list[dict]:
    return [r.body for r in log.since(0, 10_000) if r.kind == "rejected_message" and r.body["error"] == "PayloadTooLargeError"]


def test_oversized_hub_messages_are_refused_unparsed_audited_and_the_agent_goes_on(tmp_path: Path, broker: Broker) -> None:
    device = make_device(tmp_path, broker.port, max_bundle_mib=3)
    hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, device.hub_seal, sign_key=device.hub.key)
    agent, log = device.agent()
    gallery = protocol.device_topic(DEVICE, protocol.GALLERY)
    try:
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=20)
        # Valid JSON is no excuse: the size alone refuses it, before json.loads sees a byte.
        padded = b'{"v":1,"type":"bundle","pad":"' + b"a" * (3 * MIB) + b'"}'
        hub.publish(gallery, padded)
        hub.publish(protocol.device_topic(DEVICE, protocol.ACK), b"{" + b" " * (4 * MIB) + b"}")
        hub.publish(protocol.device_topic(DEVICE, protocol.RESEND), b"x" * (16 * 1024 + 1))
        hub.publish(f"{protocol.HUB_KEYS_TOPIC}/k2", b"x" * (64 * 1024 + 1))
        hub.publish(protocol.group_gallery_topic("staff"), b"x" * (7 * MIB))  # above 2 × 3 MiB + 64 KiB: the broker keeps it
        bundle = device.hub.bundle(f"device:{DEVICE}", {DEVICE: device.identity}, [person(1)], full=True)
        hub.publish(gallery, bundle)
        assert hub.wait(lambda: len(hub.gallery_acks) == 2, timeout=30), hub.gallery_acks
        refused, applied = hub.gallery_acks
        assert not refused["ok"] and refused["scope"] == f"device:{DEVICE}" and "above the 3145728-byte bound" in refused["error"]
        assert applied["ok"] and applied["gallery_version"] == 1  # the agent went on
        bodies = _too_large(log)
        assert [b["topic"] for b in bodies] == [gallery, protocol.device_topic(DEVICE, protocol.ACK),
                                                protocol.device_topic(DEVICE, protocol.RESEND), f"{protocol.HUB_KEYS_TOPIC}/k2"]
        assert [b["bytes"] for b in bodies] == [len(padded), 4 * MIB + 2, 16 * 1024 + 1, 64 * 1024 + 1]
        assert all(len(b["sha256"]) == 64 for b in bodies)
        # The 7 MiB group bundle never arrived: nothing refused or nacked for its scope.
        assert not any(a["scope"] == "group:staff" for a in hub.gallery_acks)
        assert log.verify().ok
    finally:
        agent.stop()
        hub.close()
        log.close()


def _message(topic: str, payload: bytes, mid: int) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    msg.payload, msg.qos = payload, 1
    return msg


def test_no_more_than_one_bundle_bound_of_payload_waits_for_the_worker() -> None:
    """A flood of bundles within their bound: paho's thread waits for room instead of queueing
    without end; the worker taking one lets the next in; stopping lets a waiting thread go."""
    events: queue.Queue = queue.Queue()
    inbound = Inbound(DEVICE, 1 * MIB, events)
    topic = protocol.device_topic(DEVICE, protocol.GALLERY)
    first, second = b"a" * (MIB - 10), b"b" * (MIB // 2)
    inbound.on_message(None, None, _message(topic, first, 1))  # the queue was empty: always let in
    network = threading.Thread(target=inbound.on_message, args=(None, None, _message(topic, second, 2)))
    network.start()  # 1.5 MiB would wait: it blocks until the worker has taken the first
    assert events.get(timeout=5)[1][1] == first
    inbound.taken(first)
    network.join(10)
    assert not network.is_alive() and events.get(timeout=5)[1][1] == second
    assert inbound.peak_queued <= inbound.max_queued

    third = threading.Thread(target=inbound.on_message, args=(None, None, _message(topic, first, 3)))
    third.start()  # `second` still waits for the worker, which is stopping
    inbound.close()
    third.join(10)
    assert not third.is_alive() and events.empty()  # not queued, not acked: the broker sends it again next session


def test_an_unexpected_fault_in_the_sync_worker_is_contained_and_sync_goes_on(tmp_path: Path, broker: Broker) -> None:
    device = make_device(tmp_path, broker.port)
    hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, device.hub_seal, sign_key=device.hub.key)
    agent, log = device.agent()
    send, faults = agent._send, []

    def broken_send() -> None:  # a bug, not a FacegateError: three ticks in a row
        if len(faults) < 3:
            faults.append(1)
            raise RuntimeError("a bug in the worker")
        send()

    agent._send = broken_send  # type: ignore[method-assign]
    try:
        log.append("decision", {"track": 1, "outcome": "grant", "score": 0.7})
        assert hub.wait(lambda: len(hub.records[DEVICE]) >= 1, timeout=30)  # the worker lived through the faults
        assert agent.errors == 3 and agent._thread is not None and agent._thread.is_alive()
    finally:
        agent.stop()
        hub.close()
        log.close()


def test_a_full_journal_disk_neither_keeps_an_applied_bundle_from_the_daemon_nor_a_refusal_from_its_nack(tmp_path: Path, broker: Broker) -> None:
    """The journal on a file system of its own (audit.db a symlink onto a small tmpfs), filled:
    a bundle still applies, reaches the daemon (on_gallery_update: a revocation must not wait for
    disk space) and is acked; a forged one is still nacked; nothing stops the agent."""
    with small_tmpfs(tmp_path / "journal", "4m") as disk:
        device = make_device(tmp_path / "device", broker.port)
        (device.data_dir / AUDIT_FILE).symlink_to(disk.root / AUDIT_FILE)
        hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, device.hub_seal, sign_key=device.hub.key)
        updates: list[int] = []
        agent, log = device.agent(on_gallery_update=updates.append)
        gallery, recipients = protocol.device_topic(DEVICE, protocol.GALLERY), {DEVICE: device.identity}
        try:
            assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=20)
            disk.fill()
            hub.publish(gallery, device.hub.bundle(f"device:{DEVICE}", recipients, [person(1)], full=True))
            hub.publish(gallery, Hub().bundle(f"device:{DEVICE}", recipients, [person(2)], full=True, seq=99))  # forged
            assert hub.wait(lambda: len(hub.gallery_acks) == 2, timeout=30), hub.gallery_acks
            assert [a["ok"] for a in hub.gallery_acks] == [True, False] and updates == [1]
            assert not log.health.writable and agent.errors == 0
            disk.free()
            log.append("decision", {"track": 1, "outcome": "grant", "score": 0.7})
            assert log.health.writable and log.verify().ok
        finally:
            agent.stop()
            hub.close()
            log.close()
