"""`HubService` with real device agents on a real mosquitto: a kiosk enrollment is uploaded signed
and sealed to the hub key, held for review (the kiosk's model has no calibration, so its faces
cannot be compared), approved as a new person; the same person from a second device is held too
(same name) and an admin merges it (templates added, not a second person); both are acked off
the device's outbox, and the next push brings the
hub's person back to the device, which acks the new version; a delta both devices missed makes
each ask for a resync, answered by a catch-up on its own topic (never the whole gallery to the
group), after which both are at the group's newest bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.config import HubConfig, config_from_dict
from edge.gallery.records import PersonProfile
from edge.gallery.store import GalleryStore
from sync.agent import SyncAgent
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub, HubService, publish
from tests.support.waiting import wait_for


def test_enrollments_merge_on_the_hub_and_come_back_in_bundles(broker: Broker, tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port, client_id="hub-1"))
    keys = hub.public_keys()
    (tmp_path / "sign.pub").write_text(keys["hub_sign_key"])
    (tmp_path / "seal.pub").write_text(keys["hub_seal_key"])
    service = HubService(hub).start()
    queue = ReviewQueue(hub.store)
    agents, logs, devices = [], [], {}
    try:
        assert service.connected.wait(10)
        for i, name in enumerate(("kiosk-1", "kiosk-2")):
            data_dir, kek, ident = new_device(tmp_path, name)
            hub.store.add_device(name, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("shop",), ("shop",))
            cfg = config_from_dict({"sync": {
                "broker_host": "127.0.0.1", "broker_port": broker.port, "device_id": name, "groups": ["shop"],
                "hub_sign_key_file": str(tmp_path / "sign.pub"), "hub_seal_key_file": str(tmp_path / "seal.pub"),
                "ack_timeout_s": 1.0, "reconnect_min_s": 1, "reconnect_max_s": 2}})
            log = AuditLog.open(data_dir)
            agents.append(SyncAgent(cfg, lambda d=data_dir, k=kek: GalleryStore.open(d, k), log).start())
            logs.append(log)
            devices[name] = (data_dir, kek)
            # The same customer enrolls at both kiosks (different photos, same name).
            with GalleryStore.open(data_dir, kek) as store:
                profile = PersonProfile(name="Kiosk Customer", consent_at=1_700_000_000, consent_text="I agree", retention_days=30)
                record = store.enroll(profile, [np.full(64, 1.0 + i, np.float32)], [0.7], "kiosk_model")
            log.append("enroll", {"person_uid": record.uid, "templates": 1, "by": "kiosk"})
            assert wait_for(lambda i=i: len(queue.items()) == 1, 30.0), "the upload was not held for review"
            [(item, held)] = queue.items()
            assert held is not None and held.profile.name == "Kiosk Customer" and item.device == name
            why = {r["why"] for r in item.reasons}
            if i == 0:
                assert why == {"uncalibrated_model"} and hub.store.persons() == []
                queue.approve_new(item.id)
            else:
                assert why == {"same_name", "uncalibrated_model"} and len(hub.store.persons()[0].embeddings) == 1
                queue.approve_merge(item.id, "Kiosk Customer")
            assert len(hub.store.persons()) == 1 and len(hub.store.persons()[0].embeddings) == i + 1
        assert wait_for(lambda: all(a.queue_depth() == 0 for a in agents), 30.0), "enrollment uploads were not acked"
        [merged] = hub.store.persons()
        assert merged.profile.groups == ("shop",) and merged.profile.consent_text == "I agree" and len(merged.embeddings) == 2
        out = hub.bundles()
        assert [(o.scope, o.persons) for o in out] == [("group:shop", 1)]
        publish(hub.cfg, out)
        assert wait_for(lambda: {a[0] for a in hub.store.gallery_acks() if a[3]} == set(devices), 30.0), hub.store.gallery_acks()
        for data_dir, kek in devices.values():
            with GalleryStore.open(data_dir, kek) as store:
                # The hub's person replaced each kiosk's own copy (docs/sync.md, conflicts).
                assert [p.uid for p in store.persons()] == [merged.uid]
        # Two changes; the first never reaches the devices, so each refuses the second as a gap,
        # asks for a resync and gets a catch-up on its own topic, at the second's seq.
        for n in (1, 2):
            profile = dataclasses.replace(merged.profile, name=f"Kiosk Customer {n}")
            hub.store.add_person(dataclasses.replace(merged, uid=f"{n:032x}", profile=profile))
            [delta] = hub.bundles(group="shop")
        assert delta.kind == "incremental"
        publish(hub.cfg, [delta])
        assert wait_for(lambda: {a[0] for a in hub.store.gallery_acks() if a[2] == delta.seq and a[3]} == set(devices), 30.0), hub.store.gallery_acks()
        assert hub.store.last_bundle("group:shop")[0] == delta.seq  # no full bundle went to the group
        for data_dir, kek in devices.values():
            with GalleryStore.open(data_dir, kek) as store:
                assert len(store.persons()) == 3 and store.sync_state().scopes["group:shop"] == delta.seq
        assert hub.store.alerts() == [] and hub.store.pending_acks() == []
    finally:
        for a in agents:
            a.stop()
        for log in logs:
            log.close()
        service.stop()
        hub.close()
