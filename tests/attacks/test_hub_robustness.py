"""Issue 18, hub robustness, as an attacker who can publish on a device's topics would try it
against a real `facegate hub serve` on a real mosquitto: a retained deep-JSON status (which used
to kill paho's network thread on every start), a status that is a JSON list (which broke the
status page and `admin device list`), payloads above their bounds, floods of junk (alerts must
stay bounded, counted exactly) and of resync requests (one signed bundle per window, the honest
request still answered). After each, the hub still does its job: the next honest audit batch is
stored and acked."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker, free_port
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from sync import protocol
from sync.hub import guard
from sync.hub.guard import AlertLimiter, ResyncPacer
from sync.hub.service import Hub, HubService
from tests.support.console import ConsoleClient
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
DEVICE = "door-1"


class Attacker:
    """A plain paho client on the broker: publishes anything anywhere, records what it hears."""

    def __init__(self, port: int, name: str = "attacker") -> None:
        self.heard: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.heard.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def listen(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)[1]
        time.sleep(0.3)  # let the SUBACK arrive before the hub answers

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def acks(self) -> list[dict]:
        return [json.loads(p) for t, p in self.heard if t.endswith("/ack")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Served:
    """`facegate hub serve` in its own process, with a registered device whose audit log is real."""

    def __init__(self, broker: Broker, tmp_path: Path, extra: str = "", web_port: int = 0) -> None:
        self.tmp_path, self.data = tmp_path, tmp_path / "hub"
        self.config = tmp_path / "hub.toml"
        self.config.write_text(f'[hub]\ndata_dir = "{self.data}"\nbroker_port = {broker.port}\nclient_id = "hub-1"\n'
                               f"web_port = {web_port}\n{extra}")
        hub = Hub(HubConfig(data_dir=str(self.data)))
        data_dir, _kek, ident = new_device(tmp_path, DEVICE)
        hub.store.add_device(DEVICE, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
        hub.close()
        self.log = AuditLog.open(data_dir)
        self.sent = 0
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.stderr = (self.tmp_path / "serve.err").open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(self.config), "hub", "serve"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, text=True)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.stderr.close()

    def honest_batch(self, attacker: Attacker) -> bool:
        """Appends a decision record and delivers it (resending until the hub has subscribed):
        True when the hub acked it, i.e. the hub is still doing its job."""
        self.log.append("decision", {"camera": "front", "decision": "deny"})
        records = self.log.since(self.sent, 1000)
        self.sent = records[-1].seq
        batch = protocol.encode({"v": 1, "type": "audit", "device": DEVICE, "records": [r.to_dict() for r in records]})
        for _ in range(20):
            attacker.send(protocol.device_topic(DEVICE, protocol.AUDIT), batch)
            if wait_for(lambda: any(a.get("audit_upto") == self.sent for a in attacker.acks()), 1.5):
                return True
        return False

    def hub(self) -> Hub:
        return Hub(HubConfig(data_dir=str(self.data)))

    def alerts(self) -> list[tuple[int, str, str]]:
        hub = self.hub()
        try:
            return hub.store.alerts(1000)
        finally:
            hub.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.log.close()


@pytest.fixture
def served(broker: Broker, tmp_path: Path):
    s = Served(broker, tmp_path, extra="resync_min_interval_s = 4.0\n", web_port=free_port())
    attacker = Attacker(broker.port)
    attacker.listen(protocol.device_topic(DEVICE, protocol.ACK))
    yield s, attacker
    attacker.close()
    s.close()


def _deep(depth: int) -> bytes:
    return b'{"v":1,"type":"status","device":"door-1","online":' + b"[" * depth + b"]" * depth + b"}"


def test_retained_deep_json_status_does_not_deafen_the_hub_even_after_restarts(served) -> None:
    s, attacker = served
    assert s.honest_batch(attacker)
    poison = _deep(20_000)
    assert len(poison) < guard.MAX_BYTES[protocol.STATUS]  # under the size bound: the parser meets it
    attacker.send(protocol.device_topic(DEVICE, protocol.STATUS), poison, retain=True)
    assert s.honest_batch(attacker), "the hub stopped handling messages after a deep-JSON status"
    s.stop()
    s.start()  # the retained poison comes again on every start
    assert s.honest_batch(attacker), "the restarted hub is deaf"
    assert s.proc is not None and s.proc.poll() is None
    assert any(d == DEVICE and p.startswith("status:") and "not UTF-8 JSON" in p for _at, d, p in s.alerts()), s.alerts()


def test_wrong_typed_status_is_refused_and_the_fleet_views_keep_working(served) -> None:
    s, attacker = served
    assert s.honest_batch(attacker)  # the hub is up and subscribed
    for bad in (b"[1, 2, 3]", b'"online"', b'{"v":1,"type":"status","device":"door-1","online":"yes"}',
                b'{"v":1,"type":"status","device":"door-2","online":true}',  # claims another device
                b'{"v":1,"type":"status","device":"door-1","online":true,"gallery":[]}'):
        attacker.send(protocol.device_topic(DEVICE, protocol.STATUS), bad)
    assert s.honest_batch(attacker)
    assert wait_for(lambda: len([a for a in s.alerts() if a[2].startswith("status:")]) == 5, 10.0), s.alerts()
    listed = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(s.config), "admin", "device", "list", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [d["device"] for d in json.loads(listed.stdout)] == [DEVICE]
    port = int(s.config.read_text().split("web_port = ")[1].split()[0])
    assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/login") is not None, 20.0)
    added = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(s.config), "admin", "user", "add", "vera", "--role", "viewer",
                            "--password-stdin"], cwd=REPO, input="viewer password 1\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    console = ConsoleClient(f"http://127.0.0.1:{port}/")
    assert console.login("vera", "viewer password 1").status == 200
    assert [d["device"] for d in json.loads(console.get("status.json").text)["fleet"]] == [DEVICE]


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


def test_oversized_payloads_are_refused_before_parsing(served) -> None:
    s, attacker = served
    assert s.honest_batch(attacker)
    big = b'{"v":1,"type":"status","device":"door-1","online":true,"facegate":"' + b"x" * (guard.MAX_BYTES[protocol.STATUS] + 1) + b'"}'
    attacker.send(protocol.device_topic(DEVICE, protocol.STATUS), big)
    attacker.send(protocol.device_topic(DEVICE, protocol.RESYNC), b" " * (guard.MAX_BYTES[protocol.RESYNC] + 1))
    assert s.honest_batch(attacker)
    assert wait_for(lambda: sum("above the" in p for _a, _d, p in s.alerts()) == 2, 10.0), s.alerts()


def test_a_junk_flood_leaves_a_bounded_alert_trail(served) -> None:
    s, attacker = served
    assert s.honest_batch(attacker)
    for i in range(200):
        attacker.send(protocol.device_topic(DEVICE, protocol.GALLERY_ACK), f'{{"junk": {i}}}'.encode())
    assert s.honest_batch(attacker)
    # Exactly the burst is stored one by one; the other 195 wait for the window's summary.
    assert wait_for(lambda: len([a for a in s.alerts() if a[2].startswith("gallery/ack:")]) == guard.BURST, 10.0)
    time.sleep(1.5)
    assert len([a for a in s.alerts() if a[2].startswith("gallery/ack:")]) == guard.BURST


def test_a_resync_flood_costs_one_bundle_per_window_and_the_honest_request_is_answered(served) -> None:
    s, attacker = served
    assert s.honest_batch(attacker)
    attacker.listen(protocol.group_gallery_topic("staff"))
    attacker.listen(protocol.device_topic(DEVICE, protocol.GALLERY))  # where catch-ups go
    request = protocol.encode({"v": 1, "type": "resync", "device": DEVICE, "scope": "group:staff", "have_seq": 0})
    started = time.monotonic()
    for _ in range(100):
        attacker.send(protocol.device_topic(DEVICE, protocol.RESYNC), request)
    bundles = lambda: [p for t, p in attacker.heard if t.endswith("/gallery")]  # noqa: E731
    assert wait_for(lambda: len(bundles()) >= 1, 10.0)
    flood_s = time.monotonic() - started
    # 100 requests within well under the 4 s window: one answer now (the group's first bundle, to
    # the group), one (the waiting request, then a catch-up on the device's topic) after it.
    assert wait_for(lambda: len(bundles()) == 2, 15.0), len(bundles())
    assert attacker.heard[-1][0] == protocol.device_topic(DEVICE, protocol.GALLERY)
    time.sleep(5.0)
    assert len(bundles()) == 2 or flood_s > 4.0, (len(bundles()), flood_s)
    # A request for a scope the device is not in, and one claiming another device, build nothing.
    attacker.send(protocol.device_topic(DEVICE, protocol.RESYNC),
                  protocol.encode({"v": 1, "type": "resync", "device": DEVICE, "scope": "group:vault", "have_seq": 0}))
    attacker.send(protocol.device_topic("door-9", protocol.RESYNC),
                  protocol.encode({"v": 1, "type": "resync", "device": "door-9", "scope": "group:staff", "have_seq": 0}))
    assert s.honest_batch(attacker)
    time.sleep(5.0)
    assert len(bundles()) == 2 or flood_s > 4.0


# -- the pieces, with a controlled clock ------------------------------------------------------------

def test_alert_limiter_counts_exactly_and_summarises() -> None:
    now = [0.0]
    stored: list[tuple[str, str]] = []
    limiter = AlertLimiter(lambda d, t: stored.append((d, t)), window_s=60.0, clock=lambda: now[0])
    for _ in range(50):
        limiter.alert("door-1", "status", ValueError("bad"), 10)
    limiter.alert("door-1", "audit", ValueError("other"), 10)
    assert len(stored) == guard.BURST + 1
    now[0] = 61.0
    limiter.flush()
    assert stored[-1][0] == "door-1" and f"{50 - guard.BURST} more refused" in stored[-1][1] and "bytes" in stored[-1][1]


def test_resync_pacer_answers_once_per_window_and_loses_no_request() -> None:
    now = [0.0]
    pacer = ResyncPacer(30.0, clock=lambda: now[0])
    assert pacer.request("group:staff", "door-1")
    assert not any(pacer.request("group:staff", "door-1") for _ in range(99))
    assert pacer.request("group:lobby", "door-2")  # another scope has its own window
    assert pacer.due() == [] and pacer.deferred == 98
    now[0] = 30.0
    assert pacer.due() == [("group:staff", "door-1")] and pacer.due() == []
    assert not pacer.request("group:staff", "door-1")  # the deferred answer opened a new window


def test_resync_pacer_per_device_keeps_every_devices_request() -> None:
    """Catch-ups answer one device each: a flood from door-1 must not swallow door-2's request."""
    now = [0.0]
    pacer = ResyncPacer(30.0, clock=lambda: now[0])
    assert pacer.request("group:staff", "door-1", per_device=True)
    assert not any(pacer.request("group:staff", "door-1", per_device=True) for _ in range(50))
    assert pacer.request("group:staff", "door-2", per_device=True)  # its own window
    assert not pacer.request("group:staff", "door-2", per_device=True)
    # A full bundle to the whole scope answered everyone: no member's catch-up in that window.
    assert pacer.request("group:vault", "door-1")
    assert not pacer.request("group:vault", "door-3", per_device=True)
    now[0] = 30.0
    assert sorted(pacer.due()) == [("group:staff", "door-1"), ("group:staff", "door-2"), ("group:vault", "door-3")] and pacer.due() == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_service_reports_a_dead_network_thread(broker: Broker, tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub"), broker_port=broker.port, client_id="hub-dies"))
    service = HubService(hub).start()
    try:
        assert service.connected.wait(10) and service.alive()
        died = threading.Event()

        def kill_thread(*_a: object) -> None:
            died.set()
            raise SystemExit  # what no handler catches: the network thread ends

        service.client.on_message = kill_thread
        attacker = Attacker(broker.port, "killer")
        attacker.send(protocol.device_topic(DEVICE, protocol.AUDIT), b"{}")
        attacker.close()
        assert died.wait(10)
        assert wait_for(lambda: not service.alive(), 10.0)
    finally:
        service.stop()
        hub.close()


def test_a_junk_status_stored_before_the_schema_check_does_not_break_the_fleet_views(tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    try:
        _data_dir, _kek, ident = new_device(tmp_path, DEVICE)
        hub.store.add_device(DEVICE, ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
        for junk in ("[1, 2]", '"x"', "not json", "[" * 5000 + "]" * 5000):
            hub.store.db.execute("UPDATE devices SET status_json=? WHERE id=?", (junk, DEVICE))
            [device] = hub.store.devices()
            assert device.status == {}
    finally:
        hub.close()
