"""MQTT sync figures through a real mosquitto on loopback; prints one JSON object.

    .venv/bin/python bench/sync.py [--records 10000] [--persons 10000] [--outage-s 60] [--dim 512]

- `audit_e2e_records_per_s`: records appended to the journal (fsync per record) while the agent
  runs, until the hub client has ingested all of them (chain + signature checked) and acked;
  `audit_drain_records_per_s`: the same for records already queued when the agent starts (the
  transport alone); `audit_append_records_per_s`: the journal alone.
- `bundle_*`: one full bundle of `--persons` persons (one `--dim` template each): build + sign on
  the hub side, verify + decrypt + check on the device, the one-transaction apply, and end to end
  from publish to the device's gallery ack.
- `recovery_s`: the broker is SIGKILLed, `--records` records are appended during an `--outage-s`
  outage, the broker restarts; seconds from the restart until the hub holds every record. Run
  with the shipped reconnect back-off (`[sync] reconnect_min_s`/`reconnect_max_s` = 1/60 s),
  which dominates it; `recovery_fast_backoff_s` repeats with 1/5 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the packages and the harness (bench/harness: broker, hub client, devices)

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, make_device, person
from edge.audit.journal import AuditLog
from edge.gallery.store import GalleryStore
from sync import protocol
from sync.apply import apply_bundle
from sync.bundle import open_bundle


def _wait(hub: HubClient, n: int, timeout: float) -> float:
    start = time.monotonic()
    if not hub.wait(lambda: len(hub.records[DEVICE]) >= n, timeout=timeout):
        raise SystemExit(f"hub got {len(hub.records[DEVICE])} of {n} records in {timeout} s")
    return time.monotonic() - start


def audit_rates(root: Path, n: int) -> dict[str, float]:
    with Broker(root / "broker") as broker:
        device = make_device(root, broker.port, ack_timeout_s=10.0, batch=100, window=16)
        hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, sign_key=device.hub.key)
        log = AuditLog.open(device.data_dir)
        start = time.monotonic()
        for i in range(n):
            log.append("decision", {"track": i, "outcome": "grant", "person": "0" * 32, "score": 0.61, "camera": "front"})
        append_s = time.monotonic() - start
        log.close()
        agent, log = device.agent()
        drain_s = _wait(hub, n, 300)
        start = time.monotonic()
        for i in range(n):
            log.append("decision", {"track": i, "outcome": "grant", "person": "0" * 32, "score": 0.61, "camera": "front"})
        _wait(hub, 2 * n, 300)
        e2e_s = time.monotonic() - start
        agent.stop()
        hub.close()
        assert hub.problems == [] and [r.seq for r in hub.records[DEVICE]] == list(range(1, 2 * n + 1))
    return {"audit_append_records_per_s": round(n / append_s), "audit_drain_records_per_s": round(n / drain_s), "audit_e2e_records_per_s": round(n / e2e_s)}


def bundle_times(root: Path, persons: int, dim: int) -> dict[str, float]:
    with Broker(root / "broker") as broker:
        device = make_device(root, broker.port)
        people = [person(i, n_templates=1, dim=dim) for i in range(persons)]
        scope, topic = f"device:{DEVICE}", protocol.device_topic(DEVICE, "gallery")
        start = time.monotonic()
        payload = device.hub.bundle(scope, {DEVICE: device.identity}, people, full=True)
        build_s = time.monotonic() - start
        start = time.monotonic()
        content = open_bundle(payload, topic, device.hub.key.public_key(), DEVICE, device.identity.sealing_key)
        open_s = time.monotonic() - start
        with GalleryStore.open(device.data_dir, device.kek) as store:
            start = time.monotonic()
            apply_bundle(store, content)
            apply_s = time.monotonic() - start
            assert store.status()["persons"] == persons
        # end to end: the next full bundle (every person updated) through the broker and the agent
        hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, sign_key=device.hub.key)
        agent, _log = device.agent()
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=30)
        payload = device.hub.bundle(scope, {DEVICE: device.identity}, people, full=True)
        start = time.monotonic()
        hub.publish(topic, payload)
        assert hub.wait(lambda: len(hub.gallery_acks) == 1, timeout=600) and hub.gallery_acks[0]["ok"]
        e2e_s = time.monotonic() - start
        agent.stop()
        hub.close()
    return {
        "bundle_persons": persons, "bundle_mb": round(len(payload) / 1e6, 1), "bundle_build_s": round(build_s, 2),
        "bundle_open_s": round(open_s, 2), "bundle_apply_s": round(apply_s, 2), "bundle_e2e_update_s": round(e2e_s, 2),
    }


def recovery(root: Path, n: int, outage_s: float, reconnect_max_s: int) -> float:
    with Broker(root / "broker") as broker:
        device = make_device(root, broker.port, reconnect_min_s=1, reconnect_max_s=reconnect_max_s, ack_timeout_s=10.0, batch=100, window=16)
        hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, sign_key=device.hub.key)
        agent, log = device.agent()
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=30)
        broker.kill()
        start = time.monotonic()
        for i in range(n):
            log.append("decision", {"track": i, "outcome": "grant", "score": 0.61})
        time.sleep(max(0.0, outage_s - (time.monotonic() - start)))
        broker.start()
        took = _wait(hub, n, 600)
        agent.stop()
        hub.close()
    return round(took, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--outage-s", type=float, default=60.0)
    args = parser.parse_args()
    out: dict[str, object] = {"machine": platform.machine(), "records": args.records, "outage_s": args.outage_s}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out.update(audit_rates(root / "rates", args.records))
        out.update(bundle_times(root / "bundle", args.persons, args.dim))
        out["recovery_s"] = recovery(root / "recovery", args.records, args.outage_s, reconnect_max_s=60)
        out["recovery_fast_backoff_s"] = recovery(root / "recovery-fast", args.records, args.outage_s, reconnect_max_s=5)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
