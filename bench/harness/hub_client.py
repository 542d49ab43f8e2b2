"""The hub's side of the sync tests and the bench: a real paho client on the real broker.

It ingests audit streams with `sync.hub.ingest.AuditIngest` (chain + signature checked, duplicates
dropped) and acks them, signed with `sign_key` as the real hub does (sync.control; a device
refuses unsigned acks), opens enrollment uploads and acks them, records gallery acks, resync
requests and status messages, and publishes bundles.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.audit.records import AuditRecord
from sync import protocol
from sync.hub.ingest import AuditIngest, ack_message
from sync.hub.uploads import open_enrollment


class HubClient:
    def __init__(self, port: int, device_keys: dict[str, Ed25519PublicKey], seal_key: X25519PrivateKey | None = None, tls: tuple[str, str, str] | None = None,
                 client_id: str = "hub", sign_key: Ed25519PrivateKey | None = None) -> None:
        self.ingest = AuditIngest(device_keys)
        # The devices' hub key (bench.harness.sync_helpers.Hub.key); a stranger's key without one:
        # then the devices refuse every ack, as they should.
        self.sign_key = sign_key or Ed25519PrivateKey.generate()
        self.seal_key = seal_key
        self.records: dict[str, list[AuditRecord]] = {d: [] for d in device_keys}
        self.problems: list[str] = []
        self.gallery_acks: list[dict[str, Any]] = []
        self.resyncs: list[dict[str, Any]] = []
        self.enrollments: list[tuple[dict[str, Any], list[Any]]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.acking = True
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        if tls is not None:
            self.client.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_a: self._connected.clear()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async("127.0.0.1", port, 10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("hub client could not connect")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        leaves = (protocol.AUDIT, protocol.STATUS, protocol.GALLERY_ACK, protocol.RESYNC, protocol.ENROLL)
        client.subscribe([(f"{protocol.PREFIX}/devices/+/{leaf}", 1) for leaf in leaves])
        self._connected.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        device, leaf = parts[3], "/".join(parts[4:])
        payload = bytes(msg.payload)
        with self._lock:
            if leaf == protocol.AUDIT:
                result = self.ingest.receive(device, payload)
                self.records[device].extend(result.accepted)
                if result.problem and not result.problem.startswith("gap"):
                    self.problems.append(result.problem)
                if self.acking:
                    client.publish(protocol.device_topic(device, protocol.ACK), result.ack(device, self.sign_key), qos=1)
            elif leaf == protocol.STATUS and payload:
                self.status[device] = json.loads(payload)
            elif leaf == protocol.GALLERY_ACK:
                self.gallery_acks.append(protocol.decode(payload, "gallery_ack"))
            elif leaf == protocol.RESYNC:
                self.resyncs.append(protocol.decode(payload, "resync"))
            elif leaf == protocol.ENROLL and self.seal_key is not None:
                message, persons = open_enrollment(payload, self.seal_key)
                self.enrollments.append((message, persons))
                client.publish(protocol.device_topic(device, protocol.ACK), ack_message(device, self.sign_key, enrollments=[message["uid"]]), qos=1)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
