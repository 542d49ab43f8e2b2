"""Audit retention on the device: prunes only what the hub acknowledged and what is old enough,
leave a signed checkpoint, and `verify()` / `facegate audit verify` still prove what remains and
catch every edit, removal, truncation and forged checkpoint."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit.anchor import AuditAnchor, read_anchor, write_anchor
from edge.audit.checkpoint import Checkpoint
from edge.audit.journal import AUDIT_FILE, AuditLog
from edge.audit.records import CHECKPOINT, AuditRecord, canonical_json, record_hash, sign_hash
from edge.audit.retention import DAY_US, Pruner, prune
from edge.config.audit import AuditConfig
from edge.errors import AuditError
from sync import protocol, signing
from sync.control import DeviceControl
from sync.hub.ingest import AuditIngest, ack_message
from sync.outbox import AUDIT, Outbox

DEVICE = "door-1"
HUB = Ed25519PrivateKey.generate()
KEYS = {signing.key_id(HUB.public_key()): HUB.public_key()}
MARK = "pruned-marker-"


def _append(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append("decision", {"track": i, "outcome": "unknown", "note": f"{MARK}{i:04d}"})


def _anchor(log: AuditLog, upto: int, key: Ed25519PrivateKey = HUB) -> AuditAnchor:
    """The hub's signed ack of records up to `upto`, as sync.control keeps it."""
    record = log.record(upto)
    return AuditAnchor.of_ack(json.loads(ack_message(DEVICE, key, audit_upto=upto, anchor=(upto, record.hash))))


def _later(days: float) -> int:
    import time

    return time.time_ns() // 1000 + int(days * DAY_US)


def _raw(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / AUDIT_FILE, isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS records_no_update")  # what an attacker with the file would do
    db.execute("DROP TRIGGER IF EXISTS records_no_delete")
    return db


def test_several_prunes_keep_verify_green_and_only_acknowledged_records_go(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        _append(log, 10)
        first = prune(log, _anchor(log, 6), retention_days=1, now_us=_later(2))
        assert (first.pruned, first.upto, first.checkpoint_seq) == (6, 6, 11)  # 7..10 are old but not acknowledged
        assert log.first_seq() == 7 and log.verify().ok
        _append(log, 5, start=10)  # 12..16
        assert prune(log, _anchor(log, 14), retention_days=1, now_us=_later(0)).pruned == 0  # acknowledged, but young
        second = prune(log, _anchor(log, 14), retention_days=1, now_us=_later(2))
        assert (second.pruned, second.upto, second.checkpoint_seq) == (8, 14, 17)  # the first checkpoint went too
        third = prune(log, _anchor(log, 17), retention_days=1, now_us=_later(3))
        assert (third.pruned, third.upto) == (3, 17)
        report = log.verify(anchor=(17, log.record(18).body["pruned_hash"]))  # the hub's anchor at the pruned head
        assert report.ok, report.reason
        assert report.checkpoint.pruned_upto == 17 and report.to_dict()["pruned_upto"] == 17
        assert "records 1..17 pruned" in report.reason and [r.seq for r in log.tail(10)] == [18]
        assert prune(log, None, retention_days=1, now_us=_later(9)).pruned == 0  # no hub ack: nothing goes
        assert prune(log, _anchor(log, 18), retention_days=0, now_us=_later(9)).pruned == 0  # retention off


def test_a_prune_never_passes_the_anchor_nor_trusts_one_of_another_chain(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        _append(log, 6)
        anchor = _anchor(log, 4)
        alien = AuditAnchor(4, "ab" * 32, anchor.ack)
        with pytest.raises(AuditError, match="not this journal's record"):
            prune(log, alien, retention_days=1, now_us=_later(5))
        assert log.first_seq() == 1
        assert prune(log, anchor, retention_days=1, now_us=_later(5)).upto == 4
        assert {r.seq for r in log.tail(100)} == {5, 6, 7}
        with pytest.raises(AuditError, match="did not acknowledge"):
            log.prune(6, anchor.ack)  # asked to go beyond the hub's anchor: the checkpoint it would write is refused
        assert log.first_seq() == 5 and log.verify().ok


def _pruned(tmp_path: Path) -> AuditLog:
    log = AuditLog.open(tmp_path)
    _append(log, 8)
    prune(log, _anchor(log, 3), retention_days=1, now_us=_later(2))  # checkpoint = record 9
    _append(log, 3, start=8)  # 10..12
    prune(log, _anchor(log, 6), retention_days=1, now_us=_later(2))  # checkpoint = record 13, journal 7..13
    assert log.verify().ok and log.first_seq() == 7
    return log


def test_an_edited_or_removed_record_after_prunes_is_detected(tmp_path: Path) -> None:
    _pruned(tmp_path).close()
    db = _raw(tmp_path)
    db.execute("UPDATE records SET body=replace(body, 'unknown', 'grant') WHERE seq=8")
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 8 and "altered" in report.reason
    db = _raw(tmp_path)  # opening the journal put its triggers back
    db.execute("UPDATE records SET body=replace(body, 'grant', 'unknown') WHERE seq=8")
    db.execute("DELETE FROM records WHERE seq=10")  # a middle record
    db.close()
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 11 and "records 10..10 are missing" in report.reason


def test_truncation_below_the_checkpoint_is_detected(tmp_path: Path) -> None:
    _pruned(tmp_path).close()
    db = _raw(tmp_path)
    db.execute("DELETE FROM records WHERE seq <= 8")  # the oldest remaining records, just above the pruned range
    db.close()
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 9
    assert "pruned records up to 6" in report.reason and "records 7..8 are missing (deleted below the checkpoint)" in report.reason


def test_deleting_the_checkpoint_with_the_tail_is_detected(tmp_path: Path) -> None:
    _pruned(tmp_path).close()
    db = _raw(tmp_path)
    db.execute("DELETE FROM records WHERE seq >= 13")  # the newest checkpoint is the last record
    db.close()
    with AuditLog.open(tmp_path) as log:
        report = log.verify()  # the older checkpoint (9) is the newest now: it accounts for records 1..3 only
    assert not report.ok and report.first_bad_seq == 7 and "records 4..6 are missing" in report.reason
    db = _raw(tmp_path)
    db.execute("DELETE FROM records WHERE seq = 9")  # and that one too: nothing accounts for any pruned record
    db.close()
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 7 and "expected record 1: records 1..6 are missing" in report.reason


def _forge_checkpoint(tmp_path: Path, key: Ed25519PrivateKey | None, body: dict) -> None:
    """Appends a checkpoint record signed by `key` (None: garbage signature) and prunes below it
    without the device key: what an attacker with the file could do."""
    db = _raw(tmp_path)
    seq, prev = db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    body_json, ts_us = canonical_json(body), _later(0)
    digest = record_hash(seq + 1, ts_us, CHECKPOINT, body_json, prev)
    sig = sign_hash(key, digest) if key is not None else "00" * 64
    db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (seq + 1, ts_us, CHECKPOINT, body_json, prev, digest, sig))
    db.execute("DELETE FROM records WHERE seq <= ?", (body["pruned_upto"],))
    db.close()


@pytest.mark.parametrize("key", [None, Ed25519PrivateKey.generate()], ids=["unsigned", "another-device-key"])
def test_a_forged_checkpoint_is_refused(tmp_path: Path, key: Ed25519PrivateKey | None) -> None:
    with AuditLog.open(tmp_path) as log:
        _append(log, 8)
        anchor = _anchor(log, 8)
        body = {"pruned_upto": 5, "pruned_hash": log.record(5).hash, "pruned": 5, "anchor": anchor.ack}
    _forge_checkpoint(tmp_path, key, body)
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 9 and "signature does not verify" in report.reason


def test_a_checkpoint_beyond_the_hubs_ack_is_refused_even_device_signed(tmp_path: Path) -> None:
    """The device key alone (a stolen device) cannot hide records the hub never had."""
    with AuditLog.open(tmp_path) as log:
        _append(log, 8)
        body = {"pruned_upto": 7, "pruned_hash": log.record(7).hash, "pruned": 7, "anchor": _anchor(log, 3).ack}
    from edge.identity import load_signing_key

    _forge_checkpoint(tmp_path, load_signing_key(tmp_path, create=False), body)
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 9 and "the hub did not acknowledge" in report.reason
    with pytest.raises(AuditError, match="no hub ack"):
        Checkpoint.of(AuditRecord(9, 0, CHECKPOINT, {**body, "anchor": {}}, "", "", ""))


def test_pruned_bytes_leave_the_database_and_its_wal(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        _append(log, 40)
        reader = sqlite3.connect(tmp_path / AUDIT_FILE)  # another process's connection, idle
        assert prune(log, _anchor(log, 30), retention_days=1, now_us=_later(2)).pruned == 30
        reader.close()
        files = [p for p in tmp_path.iterdir() if p.name.startswith(AUDIT_FILE)]
        data = b"".join(p.read_bytes() for p in files)
        assert all(f"{MARK}{i:04d}".encode() not in data for i in range(30)), "a pruned record's body is still in the files"
        assert f"{MARK}{35:04d}".encode() in data  # the kept ones are (the scan sees plaintext bodies)
        assert log.verify().ok


def test_the_agent_prunes_after_an_accepted_ack_paced(tmp_path: Path) -> None:
    rejects: list[str] = []
    now, wall = [100.0], [_later(2)]
    with AuditLog.open(tmp_path) as log, Outbox.open(tmp_path) as outbox:
        _append(log, 6)
        outbox.feed_audit(log, lambda _r: None)
        control = DeviceControl(DEVICE, outbox, log, lambda t, p, e: rejects.append(type(e).__name__), clock=lambda: now[0])
        control.pruner = Pruner(log, AuditConfig(retention_days=1, prune_interval_s=600), lambda: now[0], lambda: wall[0])
        ingest = AuditIngest({DEVICE: log.public_key})
        batch = protocol.encode({"v": 1, "type": "audit", "device": DEVICE, "records": [log.record(s).to_dict() for s in range(1, 5)]})
        topic = protocol.device_topic(DEVICE, protocol.ACK)
        forged = ingest.receive(DEVICE, batch).ack(DEVICE, Ed25519PrivateKey.generate())
        assert not control.ack(topic, forged, KEYS) and log.first_seq() == 1  # a refused ack prunes nothing
        assert control.ack(topic, ack_message(DEVICE, HUB, audit_upto=4, anchor=(4, log.record(4).hash)), KEYS)
        assert log.first_seq() == 5 and read_anchor(tmp_path).seq == 4 and rejects == ["SignatureError"]
        outbox.feed_audit(log, lambda _r: None)  # the checkpoint (7) travels to the hub like any record
        assert [r.seq for r in outbox.pending(0, 100) if r.kind == AUDIT] == [5, 6, 7]
        assert control.ack(topic, ack_message(DEVICE, HUB, audit_upto=6, anchor=(6, log.record(6).hash)), KEYS)
        assert log.first_seq() == 5  # within prune_interval_s: not yet
        now[0] += 601
        assert control.ack(topic, ack_message(DEVICE, HUB, audit_upto=7, anchor=(7, log.record(7).hash)), KEYS)
        assert log.first_seq() == 8 and log.verify(anchor=(7, read_anchor(tmp_path).hash)).ok


def test_a_prune_after_an_ack_leaves_no_pruned_bytes_in_the_journal_or_the_outbox(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log, Outbox.open(tmp_path) as outbox:
        _append(log, 60)
        outbox.feed_audit(log, lambda _r: None)
        control = DeviceControl(DEVICE, outbox, log, lambda t, p, e: None)
        control.pruner = Pruner(log, AuditConfig(retention_days=1), lambda: 0.0, lambda: _later(2))
        assert control.ack(protocol.device_topic(DEVICE, protocol.ACK), ack_message(DEVICE, HUB, audit_upto=37, anchor=(37, log.record(37).hash)), KEYS)
        assert log.first_seq() == 38
        for name in ("audit.db", "outbox.db"):
            data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(name))
            left = [i for i in range(37) if f"{MARK}{i:04d}".encode() in data]
            assert left == [], f"pruned records {left} are still in {name} or its WAL"
            assert f"{MARK}{45:04d}".encode() in data


def test_an_old_anchor_file_below_the_checkpoint_still_verifies(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        _append(log, 6)
        old = _anchor(log, 2)
        write_anchor(tmp_path, old)
        prune(log, _anchor(log, 5), retention_days=1, now_us=_later(2))
        assert log.verify(anchor=(old.seq, old.hash)).ok
        assert not log.verify(anchor=(5, "cd" * 32)).ok  # the anchor at the checkpoint's head must match it


def _config(tmp_path: Path, data: Path) -> Path:
    from edge.identity import raw_public

    hub_pub = tmp_path / "hub_sign.pub"
    hub_pub.write_text(raw_public(HUB.public_key()).hex())
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\ndata_dir = "{data}"\n[sync]\nhub_sign_key_file = "{hub_pub}"\n[audit]\nretention_days = 1\n')
    return config


def test_cli_verify_checks_the_checkpoints_hub_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli.main import main

    data, stranger = tmp_path / "data", Ed25519PrivateKey.generate()
    config = _config(tmp_path, data)
    with AuditLog.open(data) as log:
        _append(log, 6)
        prune(log, _anchor(log, 4), retention_days=1, now_us=_later(2))
        write_anchor(data, _anchor(log, 7))
    assert main(["--config", str(config), "audit", "verify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["pruned_upto"] == 4 and out["checkpoint"]["signature"] == "verified" and out["anchor"]["signature"] == "verified"
    other = tmp_path / "other"
    with AuditLog.open(other) as log:  # a prune "allowed" by an ack under a key this device does not trust
        _append(log, 6)
        prune(log, _anchor(log, 4, key=stranger), retention_days=1, now_us=_later(2))
    assert main(["--config", str(config), "audit", "verify", "--data-dir", str(other)]) == 1
    assert "FAILED: checkpoint record 7: signed with hub key" in capsys.readouterr().out


def test_cli_prune_refuses_without_a_verified_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli.main import main

    data = tmp_path / "data"
    config = _config(tmp_path, data)
    with AuditLog.open(data) as log:
        _append(log, 4)
    assert main(["--config", str(config), "audit", "prune"]) != 0
    assert "never acknowledged" in capsys.readouterr().err
    with AuditLog.open(data) as log:
        write_anchor(data, _anchor(log, 3, key=Ed25519PrivateKey.generate()))
    assert main(["--config", str(config), "audit", "prune"]) != 0
    assert "does not trust" in capsys.readouterr().err
    (data / "audit_anchor.json").unlink()
    with AuditLog.open(data) as log:
        write_anchor(data, _anchor(log, 3))
    assert main(["--config", str(config), "audit", "prune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"pruned": 0, "upto": 0, "checkpoint_seq": None}  # nothing a day old yet
    with AuditLog.open(data) as log:
        assert log.first_seq() == 1


def test_metrics_show_what_was_pruned(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from edge.config import Config, MetricsConfig, SyncConfig
    from edge.service.metrics import MetricsObserver, audit_pruned

    assert audit_pruned(tmp_path) is None  # no journal yet
    sync = SyncConfig(broker_host="127.0.0.1", device_id=DEVICE, hub_sign_key_file=str(tmp_path / "hub_sign.pub"))
    cfg = Config(sync=sync, metrics=MetricsConfig(enabled=False))
    observer = MetricsObserver(cfg, tmp_path)
    with AuditLog.open(tmp_path) as log:
        _append(log, 5)
        assert audit_pruned(tmp_path) == (0, 1)
        prune(log, _anchor(log, 3), retention_days=1, now_us=_later(2))
        _append(log, 2)
        prune(log, _anchor(log, 5), retention_days=1, now_us=_later(2))
    text = generate_latest(observer.registry).decode()
    assert "facegate_audit_pruned_records_total 5.0" in text and "facegate_audit_first_seq 6.0" in text
