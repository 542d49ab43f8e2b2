"""The audit journal: chained, signed, append-only; `audit verify` names the first bad record."""

from __future__ import annotations

import json
import sqlite3
import stat
from itertools import pairwise
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit.journal import AUDIT_FILE, AuditLog
from edge.audit.records import GENESIS
from edge.cli.main import main
from edge.errors import AuditError
from edge.identity import SIGN_KEY_FILE, DeviceIdentity


def _filled(tmp_path: Path, n: int = 5) -> AuditLog:
    log = AuditLog.open(tmp_path)
    for i in range(n):
        log.append("decision", {"track": i, "outcome": "grant" if i % 2 else "unknown", "score": 0.5 + i / 100})
    return log


def _raw(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / AUDIT_FILE, isolation_level=None)
    db.execute("DROP TRIGGER records_no_update")  # what an attacker with the file would do
    db.execute("DROP TRIGGER records_no_delete")
    return db


def test_records_chain_and_verify(tmp_path: Path) -> None:
    with _filled(tmp_path) as log:
        records = log.tail(10)
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert records[0].prev == GENESIS
        assert all(b.prev == a.hash for a, b in pairwise(records))
        report = log.verify()
    assert report.ok and report.records == 5 and report.first_bad_seq is None


def test_key_is_created_once_and_private(tmp_path: Path) -> None:
    _filled(tmp_path, 1).close()
    key_file = tmp_path / SIGN_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    with AuditLog.open(tmp_path) as log:
        log.append("config_reload", {})
        assert log.verify().ok
    assert key_file.read_bytes() == before
    assert DeviceIdentity.open(tmp_path).public()["sign_public_key"] == log.public_key.public_bytes_raw().hex()


def test_journal_refuses_update_and_delete(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    db = sqlite3.connect(tmp_path / AUDIT_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE records SET body='{}' WHERE seq=2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM records WHERE seq=2")


def test_altered_body_is_named(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    _raw(tmp_path).execute("""UPDATE records SET body='{"outcome":"grant","score":0.99,"track":2}' WHERE seq=3""")
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and "altered" in report.reason


def test_removed_record_is_named(tmp_path: Path) -> None:
    _filled(tmp_path).close()
    _raw(tmp_path).execute("DELETE FROM records WHERE seq=2")
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 3 and "missing" in report.reason


def test_rechained_forgery_fails_on_the_signature(tmp_path: Path) -> None:
    """An attacker who rewrites a record and recomputes the hashes still cannot sign them."""
    _filled(tmp_path).close()
    forger = AuditLog(tmp_path / "forged.db", Ed25519PrivateKey.generate())
    with AuditLog.open(tmp_path) as log:
        genuine = log.tail(10)
    for r in genuine[:3]:
        forger.append(r.kind, r.body)  # the forger's own chain: hashes are right, signatures are not the device's
    db = _raw(tmp_path)
    db.execute("DELETE FROM records")
    for r in forger.tail(10):
        db.execute("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (r.seq, r.ts_us, r.kind, json.dumps(r.body, sort_keys=True, separators=(",", ":")), r.prev, r.hash, r.sig))
    with AuditLog.open(tmp_path) as log:
        report = log.verify()
    assert not report.ok and report.first_bad_seq == 1 and "signature" in report.reason


def test_unknown_kind_and_non_json_body_are_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        with pytest.raises(AuditError, match="unknown"):
            log.append("coffee", {})
        with pytest.raises(AuditError, match="finite"):
            log.append("decision", {"score": float("nan")})
        assert log.last_seq() == 0


def test_cli_verify_and_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _filled(tmp_path).close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 5
    assert main(["audit", "tail", "-n", "2", "--data-dir", str(tmp_path), "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [4, 5]
    _raw(tmp_path).execute("UPDATE records SET kind='enroll' WHERE seq=4")
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    assert "record 4" in capsys.readouterr().out


def test_key_commands_are_audited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "g"
    assert main(["keys", "init", "--data-dir", str(data)]) == 0
    assert main(["keys", "rotate", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    with AuditLog.open(data) as log:
        actions = [(r.kind, r.body["action"], r.body["device_key_version"]) for r in log.tail(5)]
        assert log.verify().ok
    assert actions == [("key", "init", 1), ("key", "rotate", 2)]
