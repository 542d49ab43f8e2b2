"""Issue 18, keys and sequences, as an attacker would try them against a device's sync agent on a
real mosquitto, with a real hub (store, keys, `facegate hub ...` verbs) and `hub serve`'s ingest:

- a bundle signed with the real hub key but a sequence of 2^63-1 (a leaked key, a hub bug): it
  used to be applied, after which every real bundle (erasures too) was a "replay";
- a hub restored from a backup (its sequence counters gone back): its bundles used to be refused;
- a bundle built before an erase and delivered after it (held back, or another scope's): it used
  to bring the erased person back;
- hub signing-key rotation: after rotation + revocation, a bundle signed with the old key is
  refused and one signed with the new key applies; a rotation forged with an untrusted key is
  refused and changes nothing;
- a hub erase must leave neither the wrapped key nor the sealed row in hub.db / hub.db-wal.
Each refusal is audited on the device (a `rejected_message` record the hub stores) and nacked."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import DEVICE, Device, make_device, person
from edge.audit.journal import AuditLog
from edge.cli.main import main
from edge.config import load_config
from edge.gallery.store import GalleryStore
from edge.identity import raw_public
from sync import protocol, signing
from sync.agent import SyncAgent
from sync.bundle import BundleContent, build_bundle
from sync.hub.service import Hub, HubService, publish
from sync.hubkeys import ROTATION_DOMAIN
from tests.support.waiting import wait_for

SCOPE = "group:staff"


class Attacker:
    """A plain paho client: publishes whatever it likes on the victim's topics."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{time.monotonic_ns()}", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Fleet:
    """A hub (store, keys, `hub serve`'s ingest in-process) and one device agent trusting its key."""

    config: Path
    hub: Hub
    service: HubService
    device: Device
    agent: SyncAgent
    log: AuditLog
    attacker: Attacker

    def restart_hub(self, restore: Path | None = None) -> None:
        """`hub serve` restarted (after `hub rotate-signing-key` it picks up the current key), from
        the database file `restore` when given."""
        self.service.stop()
        self.hub.close()
        if restore is not None:
            db_file = Path(self.hub.cfg.data_dir) / "hub.db"
            for leftover in (db_file.with_name("hub.db-wal"), db_file.with_name("hub.db-shm")):
                leftover.unlink(missing_ok=True)
            shutil.copyfile(restore, db_file)
        self.hub = Hub(load_config(self.config).hub)
        self.service = HubService(self.hub).start()
        assert wait_for(self.service.connected.is_set, 20)

    def push(self) -> int:
        [out] = self.hub.bundles(group="staff")
        publish(self.hub.cfg, [out])
        return out.seq

    def acked(self, seq: int, ok: bool = True) -> bool:
        return any(a[1] == SCOPE and a[2] == seq and a[3] is ok for a in self.hub.store.gallery_acks(DEVICE))

    def audited(self, kind: str, **body: object) -> list[dict]:
        rows = self.hub.store.audit_query(device=DEVICE, kind=kind)
        return [r.body for _d, r in rows if all(r.body.get(k) == v for k, v in body.items())]

    def persons(self) -> list[str]:
        with GalleryStore.open(self.device.data_dir, self.device.kek) as store:
            return sorted(p.uid for p in store.persons())

    def bundle(self, seq: int, key: Ed25519PrivateKey, persons: tuple = ()) -> bytes:
        ident = self.device.identity
        content = BundleContent(SCOPE, "full", seq, None, int(time.time()), persons)
        return build_bundle(content, key, {DEVICE: ident.sealing_key.public_key()})


@pytest.fixture
def fleet(tmp_path: Path, broker: Broker) -> Iterator[Fleet]:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\n')
    hub = Hub(load_config(config).hub)
    device = make_device(tmp_path, broker.port)
    Path(device.cfg.sync.hub_sign_key_file).write_text(hub.public_keys()["hub_sign_key"] + "\n")  # the device trusts the real hub
    pub = device.identity.public()
    hub.store.add_device(DEVICE, pub["sign_public_key"], pub["seal_public_key"], ("staff",))
    service = HubService(hub).start()
    assert wait_for(service.connected.is_set, 20)
    agent, log = device.agent()
    assert wait_for(lambda: hub.store.device(DEVICE).status.get("online") is True, 20), "the agent never came online"
    f = Fleet(config, hub, service, device, agent, log, Attacker(broker.port))
    try:
        yield f
    finally:
        f.attacker.close()
        f.agent.stop()
        f.log.close()
        f.service.stop()
        f.hub.close()


def _cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_huge_sequence_signed_with_the_real_key_is_refused_and_real_bundles_still_apply(fleet: Fleet) -> None:
    alice = person(1)
    fleet.hub.store.add_person(alice)
    topic = protocol.group_gallery_topic("staff")
    fleet.attacker.send(topic, fleet.bundle(2**63 - 1, fleet.hub.identity.signing_key))  # no person: it would empty the scope too
    assert wait_for(lambda: fleet.audited("rejected_message", error="FutureSequenceError"), 30), "refusal not audited"
    assert wait_for(lambda: fleet.acked(2**63 - 1, ok=False), 10)  # nacked
    seq = fleet.push()
    assert wait_for(lambda: fleet.acked(seq), 30), fleet.hub.store.gallery_acks(DEVICE)
    assert fleet.persons() == [alice.uid]
    fleet.hub.store.erase_person(alice.uid)  # and an erasure still gets through afterwards
    seq = fleet.push()
    assert wait_for(lambda: fleet.acked(seq), 30) and fleet.persons() == []


def test_hub_restored_from_a_backup_still_moves_the_device_forward(fleet: Fleet) -> None:
    db_file = Path(fleet.hub.cfg.data_dir) / "hub.db"
    backup = db_file.with_name("backup.db")
    fleet.hub.store.add_person(person(1))
    src, dst = sqlite3.connect(db_file), sqlite3.connect(backup)
    src.backup(dst)  # last night's backup: from before the push below
    src.close()
    dst.close()
    first = fleet.push()
    assert wait_for(lambda: fleet.acked(first), 30)
    fleet.restart_hub(restore=backup)  # the hub's disk died; the admin restores the backup
    assert fleet.hub.store.db.execute("SELECT seq FROM scopes") == []  # its counters went back
    fleet.hub.store.add_person(person(2))
    second = fleet.push()
    assert second > first
    assert wait_for(lambda: fleet.acked(second), 30), fleet.hub.store.gallery_acks(DEVICE)
    assert fleet.persons() == sorted([person(1).uid, person(2).uid])


def test_bundle_held_back_until_after_an_erase_does_not_bring_the_person_back(fleet: Fleet) -> None:
    alice, bob = person(1), person(2)
    fleet.hub.store.add_person(alice)
    fleet.hub.store.add_person(bob)
    [held] = fleet.hub.bundles(device=DEVICE)  # genuine, signed, for this device's own scope: kept by the attacker
    first = fleet.push()
    assert wait_for(lambda: fleet.acked(first), 30)
    [old_group_bundle] = fleet.hub.bundles(group="staff")  # another genuine one, also held back
    fleet.hub.store.erase_person(alice.uid)
    erase = fleet.push()
    assert wait_for(lambda: fleet.acked(erase), 30) and fleet.persons() == [bob.uid]
    fleet.attacker.send(old_group_bundle.topic, old_group_bundle.payload)  # older than the erase: a replay
    assert wait_for(lambda: fleet.audited("rejected_message", error="ReplayError"), 30)
    fleet.attacker.send(held.topic, held.payload)  # a scope the erase never went through: applied, minus alice
    assert wait_for(lambda: fleet.audited("gallery_update", scope=f"device:{DEVICE}"), 30)
    [update] = fleet.audited("gallery_update", scope=f"device:{DEVICE}")
    assert update["dropped_erased"] == 1
    assert fleet.persons() == [bob.uid]


def test_rotation_then_revocation_old_key_refused_new_key_applies(fleet: Fleet) -> None:
    old_key = fleet.hub.identity.signing_key
    old_id = signing.key_id(old_key.public_key())
    assert _cli(fleet.config, "hub", "rotate-signing-key") == 0
    fleet.restart_hub()
    new_key = fleet.hub.identity.signing_key
    new_id = signing.key_id(new_key.public_key())
    assert new_id != old_id
    assert wait_for(lambda: fleet.audited("key", new_key_id=new_id, signed_by=old_id), 30), "the device did not audit the rotation"
    # `hub identity --write` hands new devices the current key
    assert _cli(fleet.config, "hub", "identity", "--write", str(fleet.config.parent / "pub")) == 0
    assert (fleet.config.parent / "pub" / "hub_sign.pub").read_text().strip() == raw_public(new_key.public_key()).hex()

    fleet.hub.store.add_person(person(1))
    seq = fleet.push()  # signed with the new key
    assert wait_for(lambda: fleet.acked(seq), 30)
    assert _cli(fleet.config, "hub", "revoke-signing-key", old_id) == 0
    assert wait_for(lambda: fleet.audited("key", revoked=[old_id]), 30), "the device did not audit the revocation"

    topic = protocol.group_gallery_topic("staff")
    stale = fleet.bundle(time.time_ns() // 1000, old_key, (person(7),))  # a leaked old key signs a fresh bundle
    fleet.attacker.send(topic, stale)
    assert wait_for(lambda: any("does not trust" in b["reason"] for b in fleet.audited("rejected_message", error="SignatureError")), 30)
    assert fleet.persons() == [person(1).uid]
    fleet.hub.store.add_person(person(2))
    seq = fleet.push()
    assert wait_for(lambda: fleet.acked(seq), 30) and fleet.persons() == sorted([person(1).uid, person(2).uid])

    # The revocation is kept on disk: a restarted agent whose config still names the old key refuses it.
    fleet.agent.stop()
    fleet.log.close()
    fleet.agent, fleet.log = fleet.device.agent()
    ring = json.loads((fleet.device.data_dir / "hub_keys.json").read_text())
    assert old_id in ring["revoked"] and list(ring["trusted"]) == [new_id]
    assert old_id not in fleet.agent._hub_keys and new_id in fleet.agent._hub_keys


def test_forged_rotation_signed_by_an_untrusted_key_is_refused(fleet: Fleet) -> None:
    real_id = signing.key_id(fleet.hub.identity.signing_key.public_key())
    evil = Ed25519PrivateKey.generate()
    evil_id = signing.key_id(evil.public_key())
    forged = {"v": 1, "type": "key_rotation", "new_key": raw_public(evil.public_key()).hex(), "new_key_id": evil_id,
              "revoke": [real_id], "created": int(time.time())}
    fleet.attacker.send(f"{protocol.HUB_KEYS_TOPIC}/{evil_id}", protocol.encode(signing.sign(forged, ROTATION_DOMAIN, evil)), retain=True)
    # the real key's id on the forgery, with the attacker's signature: a bad signature
    relabelled = {**signing.sign(forged, ROTATION_DOMAIN, evil), "key_id": real_id}
    fleet.attacker.send(f"{protocol.HUB_KEYS_TOPIC}/x", protocol.encode(relabelled), retain=True)
    assert wait_for(lambda: len(fleet.audited("rejected_message", error="UntrustedSignerError")) >= 1
                    and len(fleet.audited("rejected_message", error="SignatureError")) >= 1, 30)
    assert fleet.audited("key") == []
    assert list(fleet.agent._hub_keys) == [real_id]
    fleet.hub.store.add_person(person(1))  # the real hub key still works, the forged one never does
    seq = fleet.push()
    assert wait_for(lambda: fleet.acked(seq), 30)
    fleet.attacker.send(protocol.group_gallery_topic("staff"), fleet.bundle(time.time_ns() // 1000, evil, (person(9),)))
    assert wait_for(lambda: any(evil_id in b["reason"] for b in fleet.audited("rejected_message", error="SignatureError")), 30)
    assert fleet.persons() == [person(1).uid]
    for topic in (f"{protocol.HUB_KEYS_TOPIC}/{evil_id}", f"{protocol.HUB_KEYS_TOPIC}/x"):
        fleet.attacker.send(topic, b"", retain=True)  # clear the retained forgeries


def test_hub_erase_leaves_no_wrapped_key_or_sealed_row_in_the_sqlite_files(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\n')
    hub = Hub(load_config(config).hub)
    try:
        alice = person(1, n_templates=4)
        hub.store.add_person(alice)
        hub.store.add_person(person(2))
        [(wrapped, sealed)] = hub.store.db.execute("SELECT wrapped_key, sealed FROM persons WHERE uid=?", (alice.uid,))
        files = [tmp_path / "hub" / "hub.db", tmp_path / "hub" / "hub.db-wal"]
        everything = b"".join(f.read_bytes() for f in files if f.exists())
        assert wrapped in everything and sealed[:64] in everything  # the scan sees them before the erase
        hub.store.erase_person(alice.uid)
        everything = b"".join(f.read_bytes() for f in files if f.exists())
        for needle in (wrapped, sealed[:32], sealed[len(sealed) // 2:len(sealed) // 2 + 32], sealed[-32:]):
            assert needle not in everything
        assert [p.uid for p in hub.store.persons()] == [person(2).uid]
    finally:
        hub.close()
