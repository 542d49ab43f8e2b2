"""A device bounds every hub → device message by size before it parses it (issue 19), against a
real mosquitto: oversized bundles, acks, resend requests and key rotations are refused unparsed,
audited as `rejected_message` (PayloadTooLargeError) and, for bundles, nacked; what is far above
every bound the broker does not even deliver (MQTT v5 Maximum Packet Size); the agent goes on."""

from __future__ import annotations

from pathlib import Path

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, make_device, person
from edge.audit.journal import AuditLog
from sync import protocol

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
