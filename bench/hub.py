"""Hub figures on SQLite and a real PostgreSQL, through a real mosquitto; prints one JSON object.

    .venv/bin/python bench/hub.py [--records 20000] [--persons 10000] [--devices 100] [--dim 512] [--repeat 3]

- `ingest_store_records_per_s`: audit batches of 100 records (as the device agent sends them)
  through `HubStore.ingest_audit` — schema, chain and Ed25519 signature check per record, insert,
  chain position advanced in the same transaction; one figure per repeat, per backend.
- `ingest_mqtt_records_per_s`: the same records published QoS 1 to mosquitto and ingested by a
  running `HubService` (and acked), from the first publish until the store holds the last one.
- `bundle_*`: `--persons` persons (one `--dim` template each) in one group of `--devices`
  devices (SQLite store): `build_s` = decrypt every person from the store + seal once for all
  devices + sign; `publish_s` = until the broker's PUBACK; `delivered_s` = from the publish until
  every simulated device (an MQTT client subscribed to the group topic) holds the whole bundle;
  `open_s` = one device's verify + unseal + schema check.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness (bench/harness) and the PostgreSQL fixture (beside the tests)

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.pg_server import PgServer
from bench.harness.sync_helpers import person
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from edge.identity import DeviceIdentity, raw_public
from sync import protocol
from sync.bundle import open_bundle
from sync.hub.service import Hub, HubService, publish

BATCH = 100


def _journal(root: Path, n: int) -> tuple[DeviceIdentity, list[bytes]]:
    data_dir = root / "device"
    data_dir.mkdir(parents=True)
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"camera": "front", "decision": "unknown", "score": 0.2, "i": i}).to_dict() for i in range(n)]
    payloads = [protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": records[i : i + BATCH]}) for i in range(0, n, BATCH)]
    return DeviceIdentity.open(data_dir), payloads


def _hub(root: Path, url: str, port: int = 1883) -> Hub:
    # Its own share group per run: a stopped instance's persistent session keeps its share of a
    # group's messages queued until it returns (docs/hub.md), which would stall the next run.
    tag = f"bench-{time.monotonic_ns()}"
    return Hub(HubConfig(data_dir=str(root), database=url, broker_port=port, client_id=tag, share_group=tag))


def _fresh_db(pg: PgServer | None, name: str) -> str:
    if pg is None:
        return ""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def ingest(root: Path, backend: str, pg: PgServer | None, ident: DeviceIdentity, payloads: list[bytes], n: int, run: int, port: int) -> tuple[float, float]:
    keys = ident.public()
    hub = _hub(root / f"{backend}-store-{run}", _fresh_db(pg, f"store_{run}") if backend == "postgresql" else "")
    hub.store.add_device("door-1", keys["sign_public_key"], keys["seal_public_key"])
    t0 = time.perf_counter()
    for p in payloads:
        hub.store.ingest_audit("door-1", p)
    direct = n / (time.perf_counter() - t0)
    assert hub.store.device("door-1").audit_seq == n
    hub.close()

    hub = _hub(root / f"{backend}-mqtt-{run}", _fresh_db(pg, f"mqtt_{run}") if backend == "postgresql" else "", port)
    hub.store.add_device("door-1", keys["sign_public_key"], keys["seal_public_key"])
    service = HubService(hub).start()
    assert service.connected.wait(10)
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"door-1-{run}-{backend}", protocol=MQTTProtocolVersion.MQTTv5)
    device.connect("127.0.0.1", port)
    device.loop_start()
    t0 = time.perf_counter()
    for p in payloads:
        device.publish(protocol.device_topic("door-1", protocol.AUDIT), p, qos=1)
    deadline = time.monotonic() + 300
    while hub.store.device("door-1").audit_seq < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{backend}: the hub holds {hub.store.device('door-1').audit_seq} of {n} records; alerts {hub.store.alerts()}")
        time.sleep(0.01)
    via_mqtt = n / (time.perf_counter() - t0)
    device.disconnect()
    device.loop_stop()
    service.stop()
    hub.close()
    return direct, via_mqtt


def bundle(root: Path, persons: int, devices: int, dim: int, port: int) -> dict[str, float]:
    hub = _hub(root / "bundle", "", port)
    privates = {f"dev-{i:03d}": X25519PrivateKey.generate() for i in range(devices)}
    sign = raw_public(DeviceIdentity.open(root / "signer").signing_key.public_key()).hex()
    for name, key in privates.items():
        hub.store.add_device(name, sign, raw_public(key.public_key()).hex(), ("staff",))
    t0 = time.perf_counter()
    for i in range(persons):
        hub.store.add_person(person(i, n_templates=1, dim=dim, groups=("staff",)))
    add_s = time.perf_counter() - t0
    got: dict[str, float] = {}
    lock, done = threading.Lock(), threading.Event()
    clients = []
    for name in privates:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage, name: str = name) -> None:
            with lock:
                got[name] = time.perf_counter()
                if len(got) == len(privates):
                    done.set()

        c.on_message = on_message
        c.connect("127.0.0.1", port)
        c.subscribe(protocol.group_gallery_topic("staff"), qos=1)
        c.loop_start()
        clients.append(c)
    time.sleep(1.0)  # every SUBACK in
    t0 = time.perf_counter()
    out = hub.bundles(group="staff")[0]
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    publish(hub.cfg, [out], timeout=300)
    publish_s = time.perf_counter() - t1
    assert done.wait(600), f"only {len(got)} of {devices} devices received the bundle"
    delivered_s = max(got.values()) - t1
    for c in clients:
        c.disconnect()
        c.loop_stop()
    t2 = time.perf_counter()
    content = open_bundle(out.payload, out.topic, hub.identity.signing_key.public_key(), "dev-000", privates["dev-000"])
    open_s = time.perf_counter() - t2
    assert len(content.upserts) == persons
    hub.close()
    return {"persons": persons, "devices": devices, "dim": dim, "bytes": len(out.payload), "add_persons_s": round(add_s, 2),
            "build_s": round(build_s, 2), "publish_s": round(publish_s, 2), "delivered_s": round(delivered_s, 2), "open_s": round(open_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--persons", type=int, default=10000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    result: dict[str, object] = {"host": platform.node(), "python": platform.python_version(), "records": args.records, "batch": BATCH}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ident, payloads = _journal(root, args.records)
        pg = PgServer.find()
        with Broker(root / "broker") as broker:
            for backend in ("sqlite", "postgresql"):
                if backend == "postgresql" and pg is None:
                    result["postgresql"] = "not installed"
                    continue
                if backend == "postgresql":
                    pg.start()  # type: ignore[union-attr]
                try:
                    runs = [ingest(root, backend, pg, ident, payloads, args.records, r, broker.port) for r in range(args.repeat)]
                finally:
                    if backend == "postgresql":
                        pg.stop()  # type: ignore[union-attr]
                result[f"ingest_store_records_per_s_{backend}"] = [round(d) for d, _m in runs]
                result[f"ingest_mqtt_records_per_s_{backend}"] = [round(m) for _d, m in runs]
            result["bundle"] = bundle(root, args.persons, args.devices, args.dim, broker.port)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
