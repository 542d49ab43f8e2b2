"""sync.control and the hub's anchor, without a broker: which acks and resend requests a device
acts on, what the anchor file keeps, `audit verify` against it, the outbox re-feed, the hub's gap watch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.audit.anchor import ANCHOR_FILE, AuditAnchor, read_anchor, write_anchor
from edge.audit.journal import AUDIT_FILE, AuditLog
from edge.audit.records import GENESIS
from edge.cli.main import main
from edge.errors import AuditError
from edge.identity import raw_public
from sync import protocol, signing
from sync.control import (
    AckAheadError,
    AnchorMismatchError,
    DeviceControl,
    MisaddressedError,
    check_ack,
    check_resend,
)
from sync.hub.ingest import AuditIngest, GapWatch, IngestResult, ack_message, resend_message
from sync.outbox import AUDIT, Outbox
from sync.protocol import SchemaError, SignatureError

DEVICE = "door-1"
HUB = Ed25519PrivateKey.generate()
KEYS = {signing.key_id(HUB.public_key()): HUB.public_key()}


def _journal(tmp_path: Path, n: int) -> AuditLog:
    log = AuditLog.open(tmp_path)
    for i in range(n):
        log.append("decision", {"track": i, "outcome": "grant"})
    return log


def _hash(log: AuditLog):
    return lambda seq: None if log.record(seq) is None else log.record(seq).hash


def _ack(log: AuditLog, upto: int, key: Ed25519PrivateKey = HUB, device: str = DEVICE) -> bytes:
    record = log.record(upto)
    return ack_message(device, key, audit_upto=upto, anchor=(upto, record.hash) if record else (upto, "ab" * 32))


# -- check_ack / check_resend ------------------------------------------------------------------

def test_a_signed_ack_for_this_device_is_taken(tmp_path: Path) -> None:
    with _journal(tmp_path, 5) as log:
        ack = check_ack(_ack(log, 3), DEVICE, KEYS, 5, _hash(log))
        assert ack.audit_upto == 3 and ack.anchor is not None and (ack.anchor.seq, ack.anchor.hash) == (3, log.record(3).hash)
        enrollment = check_ack(ack_message(DEVICE, HUB, enrollments=["a1" * 16]), DEVICE, KEYS, 0, _hash(log))
        assert enrollment.enrollments == ("a1" * 16,) and enrollment.audit_upto is None and enrollment.anchor is None


def test_unsigned_foreign_altered_and_misaddressed_acks_are_refused(tmp_path: Path) -> None:
    with _journal(tmp_path, 5) as log:
        unsigned = protocol.encode({"v": 1, "type": "ack", "device": DEVICE, "audit_upto": 5})
        with pytest.raises(SignatureError, match="not signed"):
            check_ack(unsigned, DEVICE, KEYS, 5, _hash(log))
        with pytest.raises(SignatureError, match="does not trust"):
            check_ack(_ack(log, 3, key=Ed25519PrivateKey.generate()), DEVICE, KEYS, 5, _hash(log))
        altered = json.loads(_ack(log, 2))
        altered["audit_upto"] = altered["anchor"]["seq"] = 5
        altered["anchor"]["hash"] = log.record(5).hash
        with pytest.raises(SignatureError, match="forged or altered"):
            check_ack(json.dumps(altered).encode(), DEVICE, KEYS, 5, _hash(log))
        with pytest.raises(MisaddressedError, match="door-2"):
            check_ack(_ack(log, 3, device="door-2"), DEVICE, KEYS, 5, _hash(log))
        # a signature made for a resend request is not one for an ack
        resend = json.loads(resend_message(DEVICE, 1, HUB))
        as_ack = {**resend, "type": "ack"}
        as_ack.pop("from_seq"), as_ack.pop("created")
        with pytest.raises(SignatureError):
            check_ack(json.dumps(as_ack).encode(), DEVICE, KEYS, 5, _hash(log))
        with pytest.raises(SchemaError):  # the pre-signing ack: no device
            check_ack(b'{"v":1,"type":"ack","audit_upto":3}', DEVICE, KEYS, 5, _hash(log))


def test_an_ack_above_what_was_fed_or_off_this_chain_is_refused(tmp_path: Path) -> None:
    with _journal(tmp_path, 5) as log:
        with pytest.raises(AckAheadError, match="up to 5, but this device sent only up to 4"):
            check_ack(_ack(log, 5), DEVICE, KEYS, 4, _hash(log))
        other = ack_message(DEVICE, HUB, audit_upto=3, anchor=(3, "ab" * 32))
        with pytest.raises(AnchorMismatchError, match="record 3"):
            check_ack(other, DEVICE, KEYS, 5, _hash(log))
        with pytest.raises(protocol.ProtocolError, match="without the hub's anchor"):
            check_ack(ack_message(DEVICE, HUB, audit_upto=3), DEVICE, KEYS, 5, _hash(log))
        with pytest.raises(protocol.ProtocolError, match="anchor at record 2"):
            check_ack(ack_message(DEVICE, HUB, audit_upto=3, anchor=(2, log.record(2).hash)), DEVICE, KEYS, 5, _hash(log))


def test_resend_requests_are_signed_and_addressed() -> None:
    assert check_resend(resend_message(DEVICE, 7, HUB), DEVICE, KEYS) == 7
    with pytest.raises(MisaddressedError):
        check_resend(resend_message("door-2", 7, HUB), DEVICE, KEYS)
    with pytest.raises(SignatureError):
        check_resend(resend_message(DEVICE, 7, Ed25519PrivateKey.generate()), DEVICE, KEYS)
    with pytest.raises(SignatureError, match="not signed"):
        check_resend(protocol.encode({"v": 1, "type": "resend", "device": DEVICE, "from_seq": 1, "created": 0}), DEVICE, KEYS)


# -- DeviceControl on a real journal and outbox -------------------------------------------------

class _Rejects(list):
    def __call__(self, topic: str, payload: bytes, exc: Exception) -> None:
        self.append(type(exc).__name__)


def _device(tmp_path: Path, n: int) -> tuple[AuditLog, Outbox, DeviceControl, _Rejects, list[float]]:
    log, outbox, rejects, now = _journal(tmp_path, n), Outbox.open(tmp_path), _Rejects(), [100.0]
    outbox.feed_audit(log, lambda _r: None)
    return log, outbox, DeviceControl(DEVICE, outbox, log, rejects, clock=lambda: now[0]), rejects, now


def _seqs(outbox: Outbox) -> list[int]:
    return [r.seq for r in outbox.pending(0, 1000) if r.kind == AUDIT]


def test_control_acts_on_good_acks_keeps_the_anchor_and_refuses_the_rest(tmp_path: Path) -> None:
    log, outbox, control, rejects, _now = _device(tmp_path, 6)
    with log, outbox:
        topic = protocol.device_topic(DEVICE, protocol.ACK)
        assert not control.ack(topic, protocol.encode({"v": 1, "type": "ack", "device": DEVICE, "audit_upto": 6}), KEYS)
        assert not control.ack(topic, _ack(log, 6, key=Ed25519PrivateKey.generate()), KEYS)
        assert not control.ack(topic, _ack(log, 6, device="door-2"), KEYS)
        assert rejects == ["SignatureError", "SignatureError", "MisaddressedError"]
        assert _seqs(outbox) == [1, 2, 3, 4, 5, 6] and read_anchor(tmp_path) is None
        assert control.ack(topic, _ack(log, 4), KEYS)
        assert _seqs(outbox) == [5, 6]
        anchor = read_anchor(tmp_path)
        assert (anchor.seq, anchor.hash) == (4, log.record(4).hash)
        signing.verify(anchor.ack, protocol.ACK_DOMAIN, KEYS, "anchor")  # the hub's signature is kept
        assert control.ack(topic, _ack(log, 2), KEYS)  # an old genuine ack: harmless, the anchor stays
        assert read_anchor(tmp_path).seq == 4


def test_resend_refeeds_in_order_bounded_and_paced(tmp_path: Path) -> None:
    log, outbox, control, rejects, now = _device(tmp_path, 8)
    with log, outbox:
        topic = protocol.device_topic(DEVICE, protocol.RESEND)
        outbox.ack_audit(8)  # a forged ack emptied it (before acks were checked)
        outbox._write([("INSERT INTO messages (kind, ref, body) VALUES ('enrollment', ?, '{}')", ("a1" * 16,))])
        assert not control.resend(topic, resend_message(DEVICE, 3, Ed25519PrivateKey.generate()), KEYS)
        assert rejects == ["SignatureError"] and outbox.depth() == 1
        assert control.resend(topic, resend_message(DEVICE, 3, HUB), KEYS)
        rows = outbox.pending(0, 100)
        assert [r.seq for r in rows] == [3, 4, 5, 6, 7, 8, None]  # the upload after the records it refers to
        assert log.tail(1)[0].kind == "sync" and log.tail(1)[0].body == {"action": "audit_resend", "from_seq": 3, "records": 6}
        outbox.ack_audit(8)
        assert not control.resend(topic, resend_message(DEVICE, 1, HUB), KEYS)  # a replay within the pacing interval
        assert _seqs(outbox) == []
        now[0] += 10
        assert not control.resend(topic, resend_message(DEVICE, 50, HUB), KEYS)  # beyond the journal: nothing to send
        now[0] += 10
        assert control.resend(topic, resend_message(DEVICE, 1, HUB), KEYS)
        assert _seqs(outbox) == list(range(1, 9))  # up to the cursor: record 9 (the audit of the resend) comes by the feed


# -- the anchor file and `audit verify` ---------------------------------------------------------

def _anchored(tmp_path: Path, n: int, at: int) -> AuditLog:
    log = _journal(tmp_path, n)
    write_anchor(tmp_path, AuditAnchor.of_ack(json.loads(_ack(log, at))))
    return log


def _truncate(tmp_path: Path, above: int) -> None:
    db = sqlite3.connect(tmp_path / AUDIT_FILE, isolation_level=None)
    db.execute("DROP TRIGGER records_no_delete")  # what an attacker with the file would do
    db.execute("DELETE FROM records WHERE seq > ?", (above,))
    db.close()


def test_verify_fails_when_the_journal_ends_below_the_anchor(tmp_path: Path) -> None:
    _anchored(tmp_path, 6, 5).close()
    with AuditLog.open(tmp_path) as log:
        anchor = read_anchor(tmp_path)
        report = log.verify(anchor=(anchor.seq, anchor.hash))
        assert report.ok and report.anchor_seq == 5 and "matches the hub's anchor at record 5" in report.reason
    _truncate(tmp_path, 3)
    with AuditLog.open(tmp_path) as log:
        assert log.verify().ok  # the chain alone cannot see it
        report = log.verify(anchor=(anchor.seq, anchor.hash))
    assert not report.ok and report.first_bad_seq == 4
    assert "journal truncated below the hub's anchor" in report.reason and "records 4..5 were deleted" in report.reason


def test_verify_fails_when_the_anchored_record_was_written_again(tmp_path: Path) -> None:
    _anchored(tmp_path, 4, 4).close()
    _truncate(tmp_path, 2)
    with AuditLog.open(tmp_path) as log:
        log.append("decision", {"track": "again"})
        log.append("decision", {"track": "again"})
        anchor = read_anchor(tmp_path)
        report = log.verify(anchor=(anchor.seq, anchor.hash))
    assert not report.ok and report.first_bad_seq == 4 and "hash differs from the hub's anchor" in report.reason


def test_anchor_only_moves_forward_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    with _journal(tmp_path, 5) as log:
        assert write_anchor(tmp_path, AuditAnchor.of_ack(json.loads(_ack(log, 4))))
        assert not write_anchor(tmp_path, AuditAnchor.of_ack(json.loads(_ack(log, 2))))
        assert read_anchor(tmp_path).seq == 4
        assert (tmp_path / ANCHOR_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / ANCHOR_FILE).write_text("{not json")
    with pytest.raises(AuditError, match="not a readable audit anchor"):
        read_anchor(tmp_path)


def test_cli_verify_names_the_anchor_and_checks_its_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _anchored(data, 6, 6).close()
    hub_pub = tmp_path / "hub_sign.pub"
    hub_pub.write_text(raw_public(HUB.public_key()).hex())
    config = tmp_path / "config.toml"
    config.write_text(f'[gallery]\ndata_dir = "{data}"\n[sync]\nhub_sign_key_file = "{hub_pub}"\n')
    assert main(["--config", str(config), "audit", "verify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["anchor"] == {"seq": 6, "hash": out["anchor"]["hash"], "signature": "verified"}
    _truncate(data, 4)
    assert main(["--config", str(config), "audit", "verify"]) == 1
    assert "FAILED: journal truncated below the hub's anchor: it ends at record 4" in capsys.readouterr().out
    # an anchor moved back to hide the truncation: its signature no longer verifies
    doc = json.loads((data / ANCHOR_FILE).read_text())
    doc["ack"]["audit_upto"] = doc["ack"]["anchor"]["seq"] = 4
    doc["ack"]["anchor"]["hash"] = AuditLog.open(data).record(4).hash
    (data / ANCHOR_FILE).write_text(json.dumps(doc))
    assert main(["--config", str(config), "audit", "verify"]) == 1
    assert "forged or altered" in capsys.readouterr().out


# -- the hub: signed acks with the anchor, one alert per gap, paced resend requests -------------

def test_ingest_acks_carry_the_anchor_and_gaps_are_watched(tmp_path: Path) -> None:
    with _journal(tmp_path, 6) as log:
        ingest = AuditIngest({DEVICE: log.public_key})

        def batch(*seqs: int) -> bytes:
            return protocol.encode({"v": 1, "type": "audit", "device": DEVICE, "records": [log.record(s).to_dict() for s in seqs]})

        first = ingest.receive(DEVICE, batch(1, 2))
        ack = check_ack(first.ack(DEVICE, HUB), DEVICE, KEYS, 6, _hash(log))
        assert (ack.audit_upto, ack.anchor.seq, ack.anchor.hash) == (2, 2, log.record(2).hash)
        clock = [0.0]
        watch = GapWatch(10.0, 30.0, clock=lambda: clock[0])

        def due() -> list[tuple[int, bool, bool]]:
            return [(d.from_seq, d.alert, d.ask) for d in watch.due()]

        gap = ingest.receive(DEVICE, batch(5, 6))
        assert gap.gap and gap.upto == 2
        watch.observe(DEVICE, gap)
        assert due() == []  # inside the grace: the device's own resend may close it
        clock[0] = 9.0
        watch.observe(DEVICE, ingest.receive(DEVICE, batch(6)))  # the same gap: its age counts from the first sight
        assert due() == []
        clock[0] = 10.0
        assert due() == [(3, True, True)]  # one alert and a resend request
        watch.observe(DEVICE, ingest.receive(DEVICE, batch(6)))
        assert due() == []  # same gap: no second alert, and the request is paced
        clock[0] = 40.0
        assert due() == [(3, False, True)]  # still open: ask again, still one alert
        closed = ingest.receive(DEVICE, batch(3, 4, 5, 6))
        watch.observe(DEVICE, closed)
        assert not closed.gap and closed.upto == 6 and due() == []
        # a transient gap that the device closes within the grace: nothing at all
        healed = AuditIngest({DEVICE: log.public_key})
        watch.observe(DEVICE, healed.receive(DEVICE, batch(2)))
        watch.observe(DEVICE, healed.receive(DEVICE, batch(1, 2)))
        clock[0] = 100.0
        assert due() == []
        empty = IngestResult((), 0, "", 0, GENESIS)
        assert "anchor" not in json.loads(empty.ack(DEVICE, HUB))
