"""Issue 22 on the hub, with real device agents on a real mosquitto and an injected clock:

- subject access: a customer enrolled at a kiosk (the kiosk's signed upload, held for review,
  approved) and granted at two devices; `admin person export` lists every decision of theirs the
  hub's audit holds, and nothing about the other customer;
- retention: with retention_days = 1, a day later the enrolling kiosk's own sweep erases them;
  the second device still holds them and refuses them (the decision path's retention check);
  the hub's sweep erases them, pushes the erasure through the broker, the second device applies
  and confirms it (`admin person erasure-report`); nothing of them is left in either device's
  gallery (database, WAL, index snapshot) nor in the hub's database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.config import HubConfig, PrivacyConfig, config_from_dict
from edge.gallery import retention
from edge.gallery import snapshot as index_snapshot
from edge.gallery.records import PersonProfile
from edge.gallery.retention_policy import DAY_S, RetentionPolicy
from edge.gallery.search import Gallery
from edge.gallery.store import GalleryStore
from sync.agent import SyncAgent
from sync.hub.cli_privacy import erasure_report, person_export
from sync.hub.retention import HubRetention
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub, HubService, publish
from tests.gallery.test_store import _dir_bytes, _float_windows, _leaks, _text_needles
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL, DIM = "uncalibrated_model", 64  # no calibration: every upload is held for review


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _decision(uid: str, decision: str, door: str) -> dict[str, object]:
    # the fields of a decision audit record (edge/events.py audit_body) that matter here
    return {"event_id": f"e-{time.monotonic_ns()}", "camera": "cam0", "track_id": 1, "decision": decision, "reason": "match",
            "score": 0.81, "person_uid": uid, "door": door}


def _pieces(blobs: list[bytes]) -> set[bytes]:
    return {b[k : k + 32] for b in blobs for k in range(0, len(b) - 31, 32)} | set(blobs)


def _found(files: dict[str, bytes], pieces: set[bytes]) -> list[str]:
    return [name for name, data in files.items() for piece in pieces if piece in data]


def test_subject_access_and_retention_across_hub_and_fleet(broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_snapshot, "MIN_TEMPLATES", 1)  # this small gallery gets its index snapshot too
    hub_cfg = HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port, client_id="hub-1")
    hub = Hub(hub_cfg)
    keys = hub.public_keys()
    (tmp_path / "sign.pub").write_text(keys["hub_sign_key"])
    (tmp_path / "seal.pub").write_text(keys["hub_seal_key"])
    (tmp_path / "hub.toml").write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_port = {broker.port}\n')
    service = HubService(hub).start()
    queue = ReviewQueue(hub.store)
    rng = np.random.default_rng(22)
    faces = {"Kiosk Customer": _unit(rng.standard_normal((2, DIM))), "Other Customer": _unit(rng.standard_normal((2, DIM)))}
    now = int(time.time())
    agents, logs, devices, uids = [], {}, {}, {}
    try:
        assert service.connected.wait(10)
        for name in ("kiosk-1", "door-2"):
            data_dir, kek, ident = new_device(tmp_path, name)
            hub.store.add_device(name, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("shop",), ("shop",))
            cfg = config_from_dict({"sync": {
                "broker_host": "127.0.0.1", "broker_port": broker.port, "device_id": name, "groups": ["shop"],
                "hub_sign_key_file": str(tmp_path / "sign.pub"), "hub_seal_key_file": str(tmp_path / "seal.pub"),
                "ack_timeout_s": 1.0, "reconnect_min_s": 1, "reconnect_max_s": 2}})
            logs[name] = AuditLog.open(data_dir)
            agents.append(SyncAgent(cfg, lambda d=data_dir, k=kek: GalleryStore.open(d, k), logs[name]).start())
            devices[name] = (data_dir, kek)
        # Two customers enroll at the kiosk (as edge/gallery/enrollment.py does: consent now, an
        # enroll audit record that the agent uploads, signed and sealed, to the hub).
        kiosk_dir, kiosk_kek = devices["kiosk-1"]
        for name, days in (("Kiosk Customer", 1), ("Other Customer", None)):
            with GalleryStore.open(kiosk_dir, kiosk_kek) as store:
                profile = PersonProfile(name=name, groups=("shop",), consent_at=now, consent_text=f"I, {name}, agree to be recognised", retention_days=days,
                                        created_by="kiosk:req-1")
                record = store.enroll(profile, list(faces[name]), [0.8, 0.8], MODEL)
            uids[name] = record.uid
            logs["kiosk-1"].append("enroll", {"person_uid": record.uid, "templates": 2, "by": "kiosk:req-1"})
            assert wait_for(lambda: len(queue.items()) == 1, 30.0), "the upload was not held for review"
            queue.approve_new(queue.items()[0][0].id)  # the kiosk model has no calibration: always reviewed
        me, other = uids["Kiosk Customer"], uids["Other Customer"]
        assert HubRetention.serving(hub, PrivacyConfig(), service).tick() == []  # hub serve's sweep, real clock: nobody due yet
        # Their decisions at both devices, audited there and ingested by the hub.
        mine = [("kiosk-1", "grant"), ("door-2", "grant"), ("door-2", "deny"), ("kiosk-1", "grant")]
        for device, decision in mine:
            logs[device].append("decision", _decision(me, decision, f"{device}-door"))
            logs[device].append("decision", _decision(other, "grant", f"{device}-door"))
        assert wait_for(lambda: len(hub.store.audit_query(person_uid=other)) == 1 + len(mine), 30.0)
        assert wait_for(lambda: len(hub.store.audit_query(person_uid=me)) == 1 + len(mine), 30.0)
        out = hub.bundles()
        publish(hub.cfg, out)
        assert wait_for(lambda: {a[0] for a in hub.store.gallery_acks() if a[3]} == set(devices), 30.0), hub.store.gallery_acks()

        # -- subject access ---------------------------------------------------------------------
        proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(tmp_path / "hub.toml"), "admin", "person", "export", "Kiosk Customer"],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr
        export = json.loads(proc.stdout)
        assert export == json.loads(json.dumps(person_export(hub.store, me, RetentionPolicy())))
        assert export["uid"] == me and export["profile"]["name"] == "Kiosk Customer"
        assert export["profile"]["consent"] == {"given": True, "at": now, "text": "I, Kiosk Customer, agree to be recognised"}
        assert export["profile"]["templates"] == {"count": 2, "model": MODEL} and export["profile"]["groups"] == ["shop"]
        assert export["profile"]["retention"]["erase_after"] == now + DAY_S
        assert [u["device"] for u in export["enrollment"]["uploads"]] == ["kiosk-1"]
        decisions = [(r["device"], r["body"]["decision"]) for r in export["audit"] if r["kind"] == "decision"]
        assert sorted(decisions) == sorted(mine)  # every decision of theirs the hub holds
        assert [r["kind"] for r in export["audit"]].count("enroll") == 1
        assert sorted(d["device"] for d in export["devices"]) == ["door-2", "kiosk-1"] and all(d["bundle_acked"] for d in export["devices"])
        assert other not in proc.stdout and "Other Customer" not in proc.stdout  # nothing about anyone else

        # -- retention, a day later --------------------------------------------------------------
        later = now + DAY_S + 60
        door_dir, door_kek = devices["door-2"]
        Gallery.open(door_dir, door_kek, MODEL, DIM, threshold=0.5, snapshot=True).close()  # door-2's index snapshot
        assert list(door_dir.glob("index-*"))
        with GalleryStore.open(door_dir, door_kek) as store:
            held = store.find("Kiosk Customer")
            door_secret = [b for part in _sealed(store, held.id) for b in part]
            # before any sweep reaches door-2, its decision path refuses them already
            assert retention.refusal(store, held.id, held.profile, RetentionPolicy(), later) == "retention_expired"
            assert retention.refusal(store, store.find("Other Customer").id, PersonProfile("Other Customer"), RetentionPolicy(), later) is None
        with GalleryStore.open(kiosk_dir, kiosk_kek) as store:
            kiosk_secret = [b for part in _sealed(store, store.find("Kiosk Customer").id) for b in part]
            assert [(e.uid, e.reason) for e in retention.sweep(store, RetentionPolicy(), later)] == [(me, "retention")]
        hub_secret = [b for r in hub.store.db.execute("SELECT wrapped_key, sealed FROM persons WHERE uid=?", (me,)) for b in r]
        sweeper = HubRetention(hub, RetentionPolicy(), 3600.0, lambda o: service.client.publish(o.topic, o.payload, qos=1),
                               ready=service.connected.is_set, clock=lambda: later)
        assert sweeper.tick() == [(me, "retention")]
        assert sweeper.tick() == []  # the next sweep is an interval away
        assert wait_for(lambda: erasure_report(hub.store, me)["complete"], 30.0), erasure_report(hub.store, me)
        report = erasure_report(hub.store, me)
        assert report["by"] == {"by": "retention", "reason": "retention", "devices": 2}
        assert sorted(d["device"] for d in report["devices"]) == ["door-2", "kiosk-1"]
        assert all(d["status"] == "confirmed" and d["confirmed"] >= d["requested"] for d in report["devices"])
        proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(tmp_path / "hub.toml"), "admin", "person", "erasure-report", me],
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0 and json.loads(proc.stdout)["complete"] is True, proc.stderr
        assert [p.profile.name for p in hub.store.persons()] == ["Other Customer"]
        for data_dir, kek in devices.values():
            with GalleryStore.open(data_dir, kek) as store:
                assert [p.profile.name for p in store.persons()] == ["Other Customer"]
        assert not list(door_dir.glob("index-*")), "door-2's stale index snapshot must be gone"
        after = person_export(hub.store, me, RetentionPolicy())
        assert after["profile"] is None and after["erased"] is not None and len(after["erasures"]) == 2
    finally:
        for a in agents:
            a.stop()
        for log in logs.values():
            log.close()
        service.stop()
        hub.close()
    # Byte scans, every file closed: the sealed blobs, the name and consent text, the templates.
    needles = _text_needles(["Kiosk Customer", "I, Kiosk Customer, agree to be recognised"])
    for data_dir, secret in ((door_dir, door_secret), (kiosk_dir, kiosk_secret)):
        files = _dir_bytes(data_dir)
        assert _found(files, _pieces(secret)) == []
        assert _leaks({k: v for k, v in files.items() if k.startswith("gallery")}, needles, _float_windows(list(faces["Kiosk Customer"]))) == []
    assert _found(_dir_bytes(tmp_path / "hub"), _pieces(hub_secret)) == []


def _sealed(store: GalleryStore, person_id: int) -> list[list[bytes]]:
    with store._transaction(write=False) as db:
        row = db.execute("SELECT wrapped_key, sealed_profile FROM persons WHERE id=?", (person_id,)).fetchone()
        templates = [r[0] for r in db.execute("SELECT sealed FROM templates WHERE person_id=?", (person_id,))]
    return [list(row), templates]
