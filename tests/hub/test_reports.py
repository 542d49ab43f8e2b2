""""Not this person" reports on the hub (sync.hub.reports, console `Reports`): made only from a grant
the hub holds for that device and person, signed so the device takes it (sync.reports), answered
once; on the console only by operators and admins, with the session's CSRF token, all audited."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.config import Config, HubConfig
from edge.errors import FacegateError
from sync import protocol, signing
from sync.hub.console.server import ConsoleServer
from sync.hub.reports import MatchReports, ReportError
from sync.hub.service import Hub
from sync.reports import check_report
from tests.support.console import ConsoleClient

GRANT, DENY = "0123456789abcdef", "00000000000000ff"
PASSWORDS = {"ada": "admin password 1", "otto": "operator password", "vera": "viewer password 1"}


def _setup(hub: Hub, tmp_path: Path) -> str:
    data_dir, _kek, ident = new_device(tmp_path, "door-1")
    hub.store.add_device("door-1", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    alice = person(1)
    hub.store.add_person(alice)
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"event_id": GRANT, "camera": "front", "decision": "grant", "person_uid": alice.uid, "score": 0.3}),
                   log.append("decision", {"event_id": DENY, "camera": "front", "decision": "deny", "person_uid": alice.uid, "score": 0.3})]
    hub.store.ingest_audit("door-1", protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in records]}))
    return alice.uid


def _status(report_id: str, state: str = "applied", device: str = "door-1", code: str = "") -> bytes:
    return protocol.encode({"v": 1, "type": "report_status", "device": device, "report_id": report_id, "state": state, "code": code,
                            "reason": "negative made", "at": 1_800_000_000})


def _actions(hub: Hub) -> list[tuple[str, str, dict]]:
    return [(r[0], r[1], json.loads(r[2])) for r in hub.store.db.execute("SELECT action, subject, detail FROM hub_audit ORDER BY at")]


def test_reports_are_made_only_of_a_held_grant_signed_for_its_device_and_answered_once(hub: Hub, tmp_path: Path) -> None:
    uid = _setup(hub, tmp_path)
    reports, key = MatchReports(hub.store), hub.identity.signing_key
    for device, event, who, reason, why in [("door-1", "fedcba9876543210", uid, "x", "no grant decision"), ("door-1", DENY, uid, "x", "not a grant"),
                                            ("door-1", GRANT, "ee" * 16, "x", "no grant decision"), ("door-1", GRANT, uid, "  ", "reason"),
                                            ("door-1", GRANT, uid, "y" * 501, "reason"), ("door-9", GRANT, uid, "x", "door-9")]:
        with pytest.raises(FacegateError, match=why):
            reports.create(device, event, who, reason, "otto", key)
    made, message = reports.create("door-1", GRANT, uid, "her  sister", "otto", key)
    assert (made.state, made.camera, made.reason, made.by) == ("sent", "front", "her sister", "otto")
    keys = {signing.key_id(key.public_key()): key.public_key()}
    taken = check_report(message, "door-1", keys, set(), time.time())
    assert (taken["report_id"], taken["event_id"], taken["person_uid"]) == (made.id, GRANT, uid)
    with pytest.raises(protocol.ProtocolError, match="claims"):
        reports.record_status("door-1", _status(made.id, device="door-2"))
    assert reports.record_status("door-2", _status(made.id, device="door-2")) is None  # not that device's report
    assert reports.record_status("door-1", _status("ab" * 16)) is None  # no such report
    done = reports.record_status("door-1", _status(made.id))
    assert done is not None and (done.state, done.answered, done.detail) == ("applied", 1_800_000_000, "negative made")
    assert reports.record_status("door-1", _status(made.id, "refused", code="probe_expired")) is None  # first answer stands
    assert reports.get(made.id).state == "applied" and [r.id for r in reports.list("applied", "door-1")] == [made.id]
    assert reports.list("sent") == [] and reports.list(device="door-2") == []
    assert sorted((a, s, d.get("report")) for a, s, d in _actions(hub)) == [("report.applied", "door-1", made.id), ("report.sent", "otto", made.id)]
    with pytest.raises(ReportError):
        reports.get("cd" * 16)


@pytest.fixture
def console(tmp_path: Path, broker):
    cfg = dataclasses.replace(Config(), hub=HubConfig(data_dir=str(tmp_path / "hub"), web_port=0, broker_port=broker.port))
    hub = Hub(cfg.hub)
    uid = _setup(hub, tmp_path)
    server = ConsoleServer(cfg, hub, port=0)
    for (name, password), role in zip(PASSWORDS.items(), ("admin", "operator", "viewer"), strict=True):
        server.console.users.add(name, role, password)
    server.start()
    try:
        yield server, hub, uid, broker
    finally:
        server.stop()
        hub.close()


def _listen(port: int, topic: str) -> tuple[mqtt.Client, list[bytes]]:
    got: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="report-listener")
    client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(topic, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(30)
    return client, got


def test_console_reports_need_operator_and_csrf_are_sent_signed_and_listed(console) -> None:
    server, hub, uid, broker = console
    client, got = _listen(broker.port, protocol.device_topic("door-1", protocol.REPORT))
    form = {"device": "door-1", "event_id": GRANT, "person_uid": uid, "reason": "a look-alike"}
    try:
        viewer = ConsoleClient(server.url)
        viewer.login("vera", PASSWORDS["vera"])
        assert "report-form" not in viewer.get("audit").text and viewer.get("reports").status == 403
        assert viewer.post("reports", form).status == 403
        otto = ConsoleClient(server.url)
        otto.login("otto", PASSWORDS["otto"])
        audit = otto.get("audit")
        assert audit.text.count("report-form") == 1 and f'value="{GRANT}"' in audit.text  # the grant only, not the deny
        assert otto.post("reports", form, csrf=False).status == 403
        assert otto.post("reports", {**form, "csrf": "forged"}).status == 403
        otto.get("audit")  # a refusal page carries no token: the client reads the session's again
        wrong = otto.post("reports", {**form, "event_id": DENY})
        assert "not a grant" in wrong.text.replace("%20", " ")
        made = otto.post("reports", form)
        assert made.status == 200 and "/reports?made=" in made.url
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    key = hub.identity.signing_key
    [payload] = got
    report = check_report(payload, "door-1", {signing.key_id(key.public_key()): key.public_key()}, set(), time.time())
    assert report["event_id"] == GRANT and report["reason"] == "a look-alike"
    row = f'id="report-{report["report_id"]}"'
    page = otto.get("reports")
    assert row in page.text and '<td class="state">sent</td>' in page.text
    server.console.reports.record_status("door-1", _status(report["report_id"], "refused", code="probe_expired"))
    admin = ConsoleClient(server.url)
    admin.login("ada", PASSWORDS["ada"])
    assert "probe_expired" in admin.get("reports?state=refused&device=door-1").text
    assert row not in admin.get("reports?state=applied").text
    actions = _actions(hub)
    assert ("console.reported", "otto") in [(a, s) for a, s, _d in actions]
    refused = [d["why"] for a, s, d in actions if a == "console.refused" and s == "otto"]
    assert refused == ["csrf", "csrf"]
    assert [s for a, s, _d in actions if a == "console.denied"] == ["vera", "vera"]
