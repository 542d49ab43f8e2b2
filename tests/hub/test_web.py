"""The hub's status snapshot (`/status.json` of the console): fleet, pending acks, erasures and
last decisions, persons by uid only. The pages themselves: tests/hub/test_console*.py."""

from __future__ import annotations

from pathlib import Path

from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from sync import protocol
from sync.hub.service import Hub
from sync.hub.web import snapshot


def test_snapshot_lists_fleet_acks_and_decisions_by_uid(tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    data_dir, _kek, ident = new_device(tmp_path, "door-1")
    hub.store.add_device("door-1", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    hub.store.add_device("door-2", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    hub.store.record_status("door-1", {"online": True, "gallery": {"version": 4, "persons": 1}, "queue": 0})
    alice = person(1)
    hub.store.add_person(alice)
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"camera": "front", "decision": "grant", "person_uid": alice.uid, "score": 0.71})]
    hub.store.ingest_audit("door-1", protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in records]}))
    out = hub.bundles(group="staff")[0]
    hub.store.record_gallery_ack({"device": "door-1", "scope": out.scope, "seq": out.seq, "ok": True, "gallery_version": 4, "error": ""})
    data = snapshot(hub.store)
    hub.close()
    assert [d["device"] for d in data["fleet"]] == ["door-1", "door-2"] and data["fleet"][0]["online"] and not data["fleet"][1]["online"]
    assert data["pending_acks"] == [{"device": "door-2", "scope": out.scope, "seq": out.seq}]
    assert [(d["decision"], d["person_uid"]) for d in data["decisions"]] == [("grant", alice.uid)]
    assert alice.profile.name not in str(data)  # uids only, never names
