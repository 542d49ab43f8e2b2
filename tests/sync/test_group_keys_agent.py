"""The sync agent with group-key bundles against a real mosquitto: a full bundle brings the group key
wrapped to this device, deltas that only name the epoch apply with the key kept in
group_keys.json — across an agent restart — and a delta of an epoch never given is refused,
audited, and answered with a resync request."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, make_device, person
from edge.gallery.store import GalleryStore
from sync import protocol, sealing
from sync.bundle import BundleContent, GroupKey, build_bundle, epoch_aad

SCOPE = "group:staff"
TOPIC = protocol.group_gallery_topic("staff")


def _key(epoch: int, recipients: dict) -> GroupKey:
    key = os.urandom(32)
    eph, wraps = sealing.wrap_key(key, recipients, epoch_aad(SCOPE, epoch))
    return GroupKey(epoch, key, eph, wraps)


def test_deltas_open_with_the_kept_group_key_across_a_restart_and_an_unknown_epoch_asks_for_a_resync(tmp_path: Path, broker: Broker) -> None:
    device = make_device(tmp_path, broker.port)
    hub = HubClient(broker.port, {DEVICE: device.identity.signing_key.public_key()}, device.hub_seal, sign_key=device.hub.key)
    recipients = {DEVICE: device.identity.sealing_key.public_key()}
    epoch = time.time_ns() // 1000
    group_key = _key(epoch, recipients)
    held = GroupKey(epoch, group_key.key, group_key.eph, {})  # a delta of an epoch the device holds: no wraps
    seq = epoch

    def bundle(kind: str, base: int | None, upserts: list, key: GroupKey) -> bytes:
        nonlocal seq
        seq += 1
        return build_bundle(BundleContent(SCOPE, kind, seq, base, int(time.time()), tuple(upserts)), device.hub.key, recipients, key)

    agent, _log = device.agent()
    try:
        assert hub.wait(lambda: hub.status.get(DEVICE, {}).get("online") is True, timeout=20)
        hub.publish(TOPIC, bundle("full", None, [person(1), person(2)], group_key))
        hub.publish(TOPIC, bundle("incremental", seq, [person(3)], held))
        assert hub.wait(lambda: len(hub.gallery_acks) == 2) and all(a["ok"] for a in hub.gallery_acks)
        assert (device.data_dir / "group_keys.json").exists()
    finally:
        agent.stop()
    agent, log = device.agent()  # restarted: the kept wrap is read back from group_keys.json
    try:
        # (its persistent session holds what is published before it is back)
        hub.publish(TOPIC, bundle("incremental", seq, [person(4)], held))
        assert hub.wait(lambda: len(hub.gallery_acks) == 3) and hub.gallery_acks[2]["ok"]
        unknown = GroupKey(epoch + 5, os.urandom(32), group_key.eph, {})  # never wrapped to this device
        hub.publish(TOPIC, bundle("incremental", seq, [person(5)], unknown))
        assert hub.wait(lambda: len(hub.gallery_acks) == 4) and not hub.gallery_acks[3]["ok"]
        assert hub.wait(lambda: bool(hub.resyncs)) and hub.resyncs[0]["scope"] == SCOPE
        assert hub.wait(lambda: any(r.kind == "rejected_message" and r.body["error"] == "MissingGroupKey" for r in hub.records.get(DEVICE, [])))
        with GalleryStore.open(device.data_dir, device.kek) as store:
            assert sorted(p.uid for p in store.persons()) == sorted(person(i).uid for i in (1, 2, 3, 4))
    finally:
        agent.stop()
        hub.close()
