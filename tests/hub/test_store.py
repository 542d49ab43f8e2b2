"""The hub's store on SQLite and on a real PostgreSQL: persons sealed at rest, erasure confirmed
per device, audit ingest (order, duplicates, breaks as alerts), re-verification, and bundles a
device can open."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from edge.errors import CryptoError
from edge.gallery.changes import SyncPerson
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity, raw_public
from sync import protocol
from sync.apply import apply_bundle
from sync.bundle import open_bundle
from sync.hub.kek import finish_interrupted, rotate_kek
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub
from sync.hub.store import HubStoreError
from sync.hub.verify import verify_device_chain


def _audit(device: str, records: list) -> bytes:
    return protocol.encode({"v": 1, "type": "audit", "device": device, "records": [r.to_dict() for r in records]})


def _register(hub: Hub, tmp_path: Path, name: str, groups: tuple[str, ...] = ("staff",)) -> tuple[Path, bytes, DeviceIdentity]:
    data_dir, kek, ident = new_device(tmp_path, name)
    hub.store.add_device(name, ident.public()["sign_public_key"], ident.public()["seal_public_key"], groups)
    return data_dir, kek, ident


def test_persons_are_sealed_at_rest_and_erasure_is_confirmed_per_device(hub: Hub, tmp_path: Path) -> None:
    for name in ("door-1", "door-2"):
        _register(hub, tmp_path, name)
    alice = person(1, groups=("staff",))
    hub.store.add_person(alice)
    hub.store.add_person(person(2, groups=("lobby",)))
    # Nothing personal in clear: neither the name nor a template's bytes appear in any stored row.
    rows = hub.store.db.execute("SELECT * FROM persons")
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)
    assert alice.profile.name.encode() not in raw and alice.embeddings[0].tobytes()[:16] not in raw
    assert hub.store.find_person("PERSON 00001") == alice.uid  # names compare normalised
    opened = hub.store.persons(("staff",))
    assert [p.uid for p in opened] == [alice.uid] and (opened[0].embeddings[0] == alice.embeddings[0]).all()
    with pytest.raises(HubStoreError, match="already exists"):  # same name, another uid
        hub.store.add_person(SyncPerson(person(9).uid, alice.profile, alice.model, alice.embeddings, alice.qualities))

    assert hub.store.erase_person(alice.profile.name) == alice.uid
    assert hub.store.db.execute("SELECT wrapped_key, sealed, name_tag FROM persons WHERE uid=?", (alice.uid,)) == [(None, None, None)]
    assert [p.uid for p in hub.store.persons()] == [person(2).uid]
    out = hub.bundles(group="staff")
    assert len(out) == 1 and hub.store.pending_erases(["door-1"]) == [alice.uid]
    ack = {"device": "door-1", "scope": "group:staff", "seq": out[0].seq, "ok": True, "gallery_version": 3, "error": ""}
    assert hub.store.record_gallery_ack(ack) == [alice.uid]
    assert hub.store.record_gallery_ack(ack) == []  # a duplicate ack confirms nothing twice
    assert {(d, c is not None) for _u, d, _r, c in hub.store.erasures(alice.uid)} == {("door-1", True), ("door-2", False)}
    assert hub.store.pending_acks() == [("door-2", "group:staff", out[0].seq)]


def test_bundles_open_and_apply_on_the_device(hub: Hub, tmp_path: Path) -> None:
    data_dir, kek, ident = _register(hub, tmp_path, "door-1")
    _register(hub, tmp_path, "kiosk", groups=())
    for i in range(3):
        hub.store.add_person(person(i, groups=("staff",)))
    out = {o.scope: o for o in hub.bundles()}
    assert set(out) == {"group:staff", "device:kiosk"} and out["group:staff"].persons == 3 and out["device:kiosk"].persons == 0
    hub_sign = hub.identity.signing_key.public_key()
    content = open_bundle(out["group:staff"].payload, protocol.group_gallery_topic("staff"), hub_sign, "door-1", ident.sealing_key)
    with GalleryStore.open(data_dir, kek) as store:
        apply_bundle(store, content)
        assert len(store.persons()) == 3
    second = hub.bundles(group="staff")[0]
    assert second.seq > out["group:staff"].seq  # monotonic per scope
    assert len(raw_public(hub_sign)) == 32 and json.loads(json.dumps(hub.public_keys()))["hub_sign_key"] == raw_public(hub_sign).hex()


def test_audit_ingest_in_order_once_and_breaks_are_alerts(hub: Hub, tmp_path: Path) -> None:
    data_dir, _kek, _ident = _register(hub, tmp_path, "door-1")
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"decision": "grant", "person_uid": person(1).uid, "i": i}) for i in range(12)]
    store = hub.store
    assert len(store.ingest_audit("door-1", _audit("door-1", records[:5])).accepted) == 5
    again = store.ingest_audit("door-1", _audit("door-1", records[3:8]))  # a resend overlapping the last batch
    assert (len(again.accepted), again.duplicates) == (3, 2)
    gap = store.ingest_audit("door-1", _audit("door-1", records[9:]))
    assert gap.accepted == () and gap.problem.startswith("gap") and store.alerts() == []
    forged = records[8].__class__(**{**records[8].to_dict(), "body": {**records[8].body, "decision": "unknown"}})
    broken = store.ingest_audit("door-1", _audit("door-1", [forged]))
    assert broken.accepted == () and "altered" in broken.problem
    assert [a[2] for a in store.alerts()] == [broken.problem]
    store.ingest_audit("door-1", _audit("door-1", records[8:]))
    assert [r.seq for _d, r in store.audit_query(device="door-1")] == list(range(1, 13))
    assert len(store.audit_query(person_uid=person(1).uid, kind="decision")) == 12
    device = store.device("door-1")
    assert verify_device_chain(store, "door-1", device.sign_pub) == (12, "")
    # An edit of the stored trail is caught by the re-verification.
    store.db.execute("UPDATE audit SET body=? WHERE device=? AND seq=?", (json.dumps({"decision": "unknown"}), "door-1", 7))
    checked, problem = verify_device_chain(store, "door-1", device.sign_pub)
    assert checked == 6 and problem.startswith("record 7")
    with pytest.raises(HubStoreError, match="unregistered"):
        store.ingest_audit("stranger", _audit("stranger", records[:1]))


def test_bundle_sequences_follow_the_clock_so_a_restored_hub_still_moves_forward(hub: Hub) -> None:
    store = hub.store
    before_us = time.time_ns() // 1000
    first = store.next_seq("group:staff")
    assert first >= before_us and store.next_seq("group:staff") > first
    store.db.execute("UPDATE scopes SET seq=? WHERE scope=?", (3, "group:staff"))  # the backup's counter
    assert store.next_seq("group:staff") > first
    assert [store.next_seq("hub:review") for _ in range(3)] == [1, 2, 3]  # other counters just count


def _kek_path(hub: Hub) -> Path:
    return Path(hub.cfg.data_dir) / "hub.key"


def _hold_for_review(hub: Hub, p: SyncPerson) -> int:
    queue = ReviewQueue(hub.store)
    wrapped, sealed = queue._seal(41, p)
    hub.store.db.execute("INSERT INTO reviews VALUES (41, 'door-1', ?, 1, 0, '[]', ?, ?, 'pending', NULL, NULL)", (p.uid, wrapped, sealed))
    return 41


def test_kek_rotation_rewraps_every_person_and_review_key_and_replaces_the_key_file(hub: Hub) -> None:
    alice, bob = person(1), person(2)
    hub.store.add_person(alice)
    hub.store.add_person(bob)
    hub.store.erase_person(bob.uid)
    item = _hold_for_review(hub, person(3))
    key_path = _kek_path(hub)
    old_bytes = key_path.read_bytes()
    result = rotate_kek(hub.store, key_path)
    assert (result.persons, result.reviews) == (1, 1) and result.old_id != result.new_id
    assert key_path.read_bytes() != old_bytes and key_path.stat().st_mode & 0o777 == 0o600
    assert not (key_path.parent / "hub.key.old").exists() and not (key_path.parent / "hub.key.new").exists()
    assert [p.uid for p in hub.store.persons()] == [alice.uid] and hub.store.find_person(alice.profile.name) == alice.uid
    cfg = hub.cfg
    hub.close()
    reopened = Hub(cfg)  # the new key file opens everything, names found through the new tags
    try:
        assert [p.uid for p in reopened.store.persons()] == [alice.uid]
        assert reopened.store.find_person("PERSON 00001") == alice.uid
        [(entry, held)] = ReviewQueue(reopened.store).items()
        assert entry.id == item and held is not None and held.uid == person(3).uid
    finally:
        reopened.close()
    key_path.write_bytes(old_bytes)  # a restored old key file is refused at open, naming the KEKs
    with pytest.raises(HubStoreError, match="sealed under KEK"):
        Hub(cfg)


def test_kek_rotation_failing_in_the_transaction_leaves_the_old_key_in_charge(hub: Hub) -> None:
    alice = person(1)
    hub.store.add_person(alice)
    hub.store.add_person(person(2))
    hub.store.db.execute("UPDATE persons SET wrapped_key=? WHERE uid=?", (b"\x00" * 60, person(2).uid))  # one damaged row
    key_path = _kek_path(hub)
    old_bytes = key_path.read_bytes()
    with pytest.raises(CryptoError):
        rotate_kek(hub.store, key_path)
    assert key_path.read_bytes() == old_bytes and sorted(p.name for p in key_path.parent.glob("hub.key*")) == ["hub.key"]
    assert hub.store.find_person(alice.profile.name) == alice.uid  # still the old KEK's tags and keys


def test_kek_rotation_interrupted_after_its_commit_is_finished_by_the_next_run(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = person(1)
    hub.store.add_person(alice)
    key_path = _kek_path(hub)

    def crash(*_a: object) -> None:
        raise OSError("killed before the key file was swapped")

    monkeypatch.setattr("sync.hub.kek.os.replace", crash)
    with pytest.raises(OSError, match="killed"):
        rotate_kek(hub.store, key_path)
    monkeypatch.undo()
    cfg = hub.cfg
    hub.close()
    with pytest.raises(HubStoreError, match="rotate-kek"):  # the database is under the new KEK, the file still old
        Hub(cfg)
    from sync.hub.db import HubDb

    db = HubDb(cfg.database, Path(cfg.data_dir) / "hub.db")
    try:
        assert finish_interrupted(key_path, db).startswith("finished")
    finally:
        db.close()
    reopened = Hub(cfg)
    try:
        assert [p.uid for p in reopened.store.persons()] == [alice.uid]
    finally:
        reopened.close()


def test_hub_rotate_kek_verb_rotates_and_the_hub_reopens_with_the_new_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli.main import main

    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\n')
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    hub.store.add_person(person(1))
    hub.close()
    old = (tmp_path / "hub" / "hub.key").read_bytes()
    assert main(["--config", str(config), "hub", "rotate-kek"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["persons"] == 1 and report["old_kek_id"] != report["new_kek_id"]
    assert (tmp_path / "hub" / "hub.key").read_bytes() != old
    reopened = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    try:
        assert [p.uid for p in reopened.store.persons()] == [person(1).uid]
    finally:
        reopened.close()
