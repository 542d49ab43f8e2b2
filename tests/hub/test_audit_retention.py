"""Audit retention on the hub (SQLite and a real PostgreSQL): prunes by age behind a hub-signed
checkpoint, verification still proves what remains, and edits, removals, truncations and forged
checkpoints are caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.audit.records import AuditRecord
from edge.config import HubConfig
from sync import protocol, signing
from sync.hub.audit_prune import (
    CHECKPOINT_DOMAIN,
    DAY_US,
    prune_all,
    pruned_counts,
    read_checkpoint,
    verify_chain,
)
from sync.hub.service import Hub

MARK = "hub-pruned-marker-"


class _Device:
    def __init__(self, hub: Hub, tmp_path: Path, name: str = "door-1") -> None:
        data_dir, _kek, ident = new_device(tmp_path, name)
        hub.store.add_device(name, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
        self.hub, self.name, self.log, self.records = hub, name, AuditLog.open(data_dir), []

    def send(self, n: int) -> list[AuditRecord]:
        new = [self.log.append("decision", {"decision": "unknown", "note": f"{MARK}{len(self.records) + i:04d}"}) for i in range(n)]
        self.records += new
        message = protocol.encode({"v": 1, "type": "audit", "device": self.name, "records": [r.to_dict() for r in new]})
        assert len(self.hub.store.ingest_audit(self.name, message).accepted) == n
        return new


def _keys(hub: Hub) -> dict:
    return hub.signing_keys.public_keys()


def _prune(hub: Hub, at_us: int, days: int = 1) -> dict[str, int]:
    """Prunes as `hub serve` does, on a clock where `at_us` is `days` old."""
    return prune_all(hub.store, hub.identity.signing_key, _keys(hub), days, now_us=at_us + days * DAY_US)


def _verify(hub: Hub, device: _Device) -> tuple[int, str]:
    checked, problem, _cp = verify_chain(hub.store.db, device.name, hub.store.device(device.name).sign_pub, _keys(hub))
    return checked, problem


def test_several_prunes_keep_the_hubs_verification_green(hub: Hub, tmp_path: Path) -> None:
    door, other = _Device(hub, tmp_path), _Device(hub, tmp_path, "door-2")
    door.send(10)
    other.send(3)
    assert _verify(hub, door) == (10, "")
    assert _prune(hub, door.records[4].ts_us) == {"door-1": 4, "door-2": 0}  # records 1..4 were written before record 5
    assert _verify(hub, door) == (6, "") and _verify(hub, other) == (3, "")
    door.send(5)  # 11..15
    assert _prune(hub, door.records[12].ts_us)["door-1"] == 8  # 5..12
    assert read_checkpoint(hub.store.db, "door-1", _keys(hub)).seq == 12
    assert _verify(hub, door) == (3, "") and pruned_counts(hub.store.db) == {"door-1": 12, "door-2": 3}
    assert _prune(hub, door.records[12].ts_us)["door-1"] == 0  # nothing more is old enough
    assert _prune(hub, door.records[-1].ts_us + 1)["door-1"] == 3  # everything: the checkpoint is the device row's head
    assert _verify(hub, door) == (0, "") and [r.seq for _d, r in hub.store.audit_query(device="door-1")] == []
    door.send(2)  # ingest goes on from the device row
    assert _verify(hub, door) == (2, "") and pruned_counts(hub.store.db) == {"door-1": 15, "door-2": 3}
    assert prune_all(hub.store, hub.identity.signing_key, _keys(hub), 0) == {}  # retention off


def test_an_edited_removed_or_truncated_record_after_a_prune_is_caught(hub: Hub, tmp_path: Path) -> None:
    door = _Device(hub, tmp_path)
    door.send(10)
    _prune(hub, door.records[4].ts_us)  # checkpoint at 4, records 5..10
    db = hub.store.db
    db.execute("UPDATE audit SET body=? WHERE device=? AND seq=?", (json.dumps({"decision": "grant"}), "door-1", 7))
    checked, problem = _verify(hub, door)
    assert checked == 2 and problem.startswith("record 7") and "altered" in problem
    db.execute("UPDATE audit SET body=? WHERE device=? AND seq=?", (json.dumps(door.records[6].body), "door-1", 7))
    assert _verify(hub, door) == (6, "")
    row = db.execute("SELECT * FROM audit WHERE device=? AND seq=5", ("door-1",))[0]
    db.execute("DELETE FROM audit WHERE device=? AND seq=5", ("door-1",))  # just above the checkpoint
    assert _verify(hub, door) == (0, "record 5 is missing (next stored is 6) (records 1..4 were pruned)")
    db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    db.execute("DELETE FROM audit WHERE device=? AND seq=8", ("door-1",))  # a middle record
    assert _verify(hub, door)[1] == "record 8 is missing (next stored is 9) (records 1..4 were pruned)"
    db.execute("DELETE FROM audit WHERE device=? AND seq>=8", ("door-1",))  # the tail
    assert _verify(hub, door)[1] == "the stored chain ends at record 7, but the hub accepted records up to 10: records 8..10 were deleted"
    assert _prune(hub, door.records[-1].ts_us + 1) == {"door-1": 3}  # what is left still checks out, and goes
    assert _verify(hub, door)[1] == "the stored chain ends at record 7, but the hub accepted records up to 10: records 8..10 were deleted"


def test_a_forged_or_rolled_back_checkpoint_is_refused(hub: Hub, tmp_path: Path) -> None:
    door = _Device(hub, tmp_path)
    door.send(10)
    _prune(hub, door.records[2].ts_us)  # checkpoint at 2
    db = hub.store.db
    genuine_old = db.execute("SELECT doc FROM audit_checkpoints WHERE device='door-1'")[0][0]
    _prune(hub, door.records[5].ts_us)  # checkpoint at 5
    genuine = db.execute("SELECT seq, hash, pruned, doc FROM audit_checkpoints WHERE device='door-1'")[0]
    h8 = door.records[7].hash
    stranger = Ed25519PrivateKey.generate()
    forged = {"v": 1, "type": "hub_audit_checkpoint", "device": "door-1", "seq": 8, "hash": h8, "pruned": 8, "at": 0}
    for doc, why in ((forged, "not signed"), (signing.sign(forged, CHECKPOINT_DOMAIN, stranger), "does not trust"),
                     (signing.sign(forged, protocol.ACK_DOMAIN, hub.identity.signing_key), "forged or altered")):
        db.execute("UPDATE audit_checkpoints SET seq=8, hash=?, pruned=8, doc=? WHERE device='door-1'", (h8, json.dumps(doc)))
        db.execute("DELETE FROM audit WHERE device='door-1' AND seq<=8")
        checked, problem = _verify(hub, door)
        assert checked == 0 and why in problem and "forged or altered" in problem, problem
        assert _prune(hub, door.records[-1].ts_us + 1) == {}  # nothing is pruned on top of it; an alert says why
        assert any(why in a[2] for a in hub.store.alerts())
    db.execute("UPDATE audit_checkpoints SET seq=8 WHERE device='door-1'")  # the row moved, the signature kept
    db.execute("UPDATE audit_checkpoints SET doc=? WHERE device='door-1'", (genuine[3],))
    assert "differs from what the hub signed" in _verify(hub, door)[1]
    # a genuine older checkpoint put back: the records it says remain are gone
    db.execute("UPDATE audit_checkpoints SET seq=2, hash=?, pruned=2, doc=? WHERE device='door-1'", (door.records[1].hash, genuine_old))
    assert _verify(hub, door)[1].startswith("record 3 is missing")


def test_pruned_audit_bytes_leave_the_sqlite_database_and_wal(tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    try:
        door = _Device(hub, tmp_path)
        door.send(30)
        assert _prune(hub, door.records[20].ts_us)["door-1"] == 20
        data = b"".join(p.read_bytes() for p in (tmp_path / "hub").iterdir() if p.name.startswith("hub.db"))
        assert all(f"{MARK}{i:04d}".encode() not in data for i in range(20))
        assert f"{MARK}{25:04d}".encode() in data
    finally:
        hub.close()


def test_admin_audit_prune_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from edge.cli.main import main

    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\naudit_retention_days = 2\n')
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    door = _Device(hub, tmp_path)
    real = time.time_ns
    monkeypatch.setattr("edge.audit.journal.time.time_ns", lambda: real() - 3 * DAY_US * 1000)  # written three days ago
    door.send(4)
    monkeypatch.setattr("edge.audit.journal.time.time_ns", real)
    door.send(2)
    hub.close()
    assert main(["--config", str(config), "admin", "audit", "prune"]) == 0
    assert json.loads(capsys.readouterr().out) == {"pruned": {"door-1": 4}}
    assert main(["--config", str(config), "admin", "audit", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == [{"device": "door-1", "records": 2, "pruned": 4, "ok": True, "problem": None}]
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    hub.store.db.execute("UPDATE audit_checkpoints SET doc='{}'")
    hub.close()
    assert main(["--config", str(config), "admin", "audit", "verify"]) == 1
    assert "BROKEN: audit checkpoint of door-1: not signed" in capsys.readouterr().out
