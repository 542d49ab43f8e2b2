"""`facegate admin` verbs that need no broker or models, on a real hub store: devices, groups,
persons, the audit trail and its verification (exit 1 once a stored record is edited)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.cli.main import main
from edge.config import load_config
from sync import protocol
from sync.hub.service import Hub


def _run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), *args])
    return code, capsys.readouterr().out


def test_admin_devices_groups_persons_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\n')
    data_dir, _kek, ident = new_device(tmp_path, "door-1")
    (tmp_path / "door-1.json").write_text(json.dumps(ident.public()))
    assert _run(capsys, config, "admin", "device", "add", "door-1", "--identity", str(tmp_path / "door-1.json"), "--group", "staff")[0] == 0
    assert main(["--config", str(config), "admin", "device", "add", "door-2", "--sign-key", "zz", "--seal-key", "zz"]) == 2  # typed error, no traceback
    assert _run(capsys, config, "admin", "group", "add", "lobby")[0] == 0
    assert _run(capsys, config, "admin", "group", "assign", "lobby", "--device", "door-1")[0] == 0
    code, out = _run(capsys, config, "admin", "device", "list", "--json")
    assert code == 0 and [(d["device"], d["groups"]) for d in json.loads(out)] == [("door-1", ["lobby", "staff"])]

    hub = Hub(load_config(config).hub)
    alice, bob = person(1), person(2)
    hub.store.add_person(alice)
    hub.store.add_person(bob)
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"decision": "grant", "person_uid": uid}) for uid in (alice.uid, bob.uid, alice.uid)]
    hub.store.ingest_audit("door-1", protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in records]}))
    code, out = _run(capsys, config, "admin", "person", "list", "--json")
    assert sorted(p["person"] for p in json.loads(out)) == [alice.profile.name, bob.profile.name]
    assert _run(capsys, config, "admin", "person", "remove", bob.profile.name)[0] == 0
    code, out = _run(capsys, config, "admin", "audit", "query", "--person", alice.profile.name, "--since", "2000-01-01", "--json")
    assert code == 0 and [r["seq"] for r in json.loads(out)] == [1, 3]
    code, out = _run(capsys, config, "admin", "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["devices"] == [{"device": "door-1", "records": 3, "pruned": 0, "ok": True, "problem": None}]
    hub.store.db.execute("UPDATE audit SET ts_us = ts_us + 1 WHERE seq = 2")
    code, out = _run(capsys, config, "admin", "audit", "verify")
    assert code == 1 and "BROKEN: record 2" in out
    code, out = _run(capsys, config, "admin", "device", "status", "door-1", "--json")
    assert code == 0 and json.loads(out)["audit_seq"] == 3
    hub.close()
