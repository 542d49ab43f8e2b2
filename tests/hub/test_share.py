"""Two `hub serve` instances on one mosquitto share the ingest through a shared subscription
(`$share/facegate-hub/...`): each audit batch goes to one of them, both take part, and every
record is stored exactly once and in order in the store they share."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from sync import protocol
from sync.hub.service import Hub, HubService

BATCHES, PER_BATCH = 30, 4


def test_two_hub_instances_split_the_ingest(broker: Broker, tmp_path: Path) -> None:
    data_dir, _kek, ident = new_device(tmp_path, "door-1")
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"decision": "unknown", "i": i}) for i in range(BATCHES * PER_BATCH)]
    hubs = [Hub(HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port, client_id=f"hub-{i}")) for i in range(2)]
    hubs[0].store.add_device("door-1", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    services = [HubService(h).start() for h in hubs]
    acked = threading.Condition()
    upto = [0]

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with acked:
            upto[0] = max(upto[0], json.loads(msg.payload).get("audit_upto", 0))
            acked.notify_all()

    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="door-1", protocol=MQTTProtocolVersion.MQTTv5)
    device.on_message = on_message
    device.connect("127.0.0.1", broker.port)
    device.subscribe(protocol.device_topic("door-1", protocol.ACK), qos=1)
    device.loop_start()
    try:
        assert all(s.connected.wait(10) for s in services)
        # Like the device's outbox: send a batch, resend from the hub's ack until it moves on.
        for b in range(BATCHES):
            batch = records[b * PER_BATCH : (b + 1) * PER_BATCH]
            payload = protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in batch]})
            with acked:
                while upto[0] < batch[-1].seq:
                    device.publish(protocol.device_topic("door-1", protocol.AUDIT), payload, qos=1)
                    acked.wait_for(lambda last=batch[-1].seq: upto[0] >= last, timeout=5)
    finally:
        device.disconnect()
        device.loop_stop()
        for s in services:
            s.stop()
    stored = [r.seq for _d, r in hubs[0].store.audit_query(device="door-1", limit=10_000)]
    handled = [s.handled for s in services]
    for h in hubs:
        h.close()
    assert stored == list(range(1, BATCHES * PER_BATCH + 1))
    assert all(n > 0 for n in handled), f"one instance took every message: {handled}"
