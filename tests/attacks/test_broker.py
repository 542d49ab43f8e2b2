"""Attacks on broker access (issue 18), against a real mosquitto secured as docs/sync.md says:
TLS with client certificates required, a password per user, the shipped per-device ACL.

Each attack is made by a paho client holding some real credentials (door-a's own, as a device
taken over would have them). A refusal is shown three ways: the broker says so to the attacker
(CONNACK / PUBACK "Not authorized"), the broker's log records it, and a subscriber with the hub's
credentials (and the victim device's) receives nothing of it — only the genuine message sent
after it, on the same path, which proves the subscriber was listening. The device and hub refuse
to reach a broker off this host in clear, or to use a password file others can read, before
anything connects.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import SHIPPED_ACL, Broker, SecureBroker
from bench.harness.sync_helpers import make_device
from edge.config import HubConfig
from edge.errors import ConfigError
from sync import protocol
from sync.hub.service import mqtt_client
from tests.conftest import unavailable
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
NOT_AUTHORIZED = 135  # MQTT v5 reason code, in PUBACK and CONNACK


@dataclass
class Watch:
    """What one client saw: its CONNACK, the reason code of each PUBACK, the messages it got."""

    connack: Any = None
    disconnected: bool = False
    pubacks: dict[int, int] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]


def _client(fleet: SecureBroker, user: str, client_id: str, password: str | None = None, username: str | None = None,
            cert: bool = True) -> tuple[mqtt.Client, Watch]:
    login = fleet.logins[user]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set(ca_certs=str(fleet.ca), certfile=str(login.cert) if cert else None, keyfile=str(login.key) if cert else None)
    client.username_pw_set(username or user, login.password if password is None else password)
    watch = Watch()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with watch.lock:
            watch.messages.append((msg.topic, bytes(msg.payload)))

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        watch.pubacks[mid] = reason.value

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        watch.connack = reason

    def on_disconnect(*_a: Any) -> None:
        watch.disconnected = True

    client.on_message, client.on_publish, client.on_connect, client.on_disconnect = on_message, on_publish, on_connect, on_disconnect
    return client, watch


@pytest.fixture
def clients() -> Iterator[list[mqtt.Client]]:
    started: list[mqtt.Client] = []
    yield started
    for c in started:
        c.disconnect()
        c.loop_stop()


def _connected(fleet: SecureBroker, started: list[mqtt.Client], user: str, client_id: str, subscribe: tuple[str, ...] = ()) -> tuple[mqtt.Client, Watch]:
    client, watch = _client(fleet, user, client_id)
    client.connect("127.0.0.1", fleet.port)
    client.loop_start()
    started.append(client)
    assert wait_for(lambda: watch.connack is not None, 10) and not watch.connack.is_failure, watch.connack
    if subscribe:
        granted = threading.Event()
        client.on_subscribe = lambda *_a: granted.set()
        client.subscribe([(t, 1) for t in subscribe])
        assert granted.wait(10)
    return client, watch


def _publish(client: mqtt.Client, watch: Watch, topic: str, payload: bytes) -> int:
    """Publishes QoS 1 and returns the broker's PUBACK reason code (0 = accepted)."""
    info = client.publish(topic, payload, qos=1)
    assert wait_for(lambda: info.mid in watch.pubacks, 10), f"no PUBACK for {topic}"
    return watch.pubacks[info.mid]


def _broker_log(fleet: SecureBroker) -> str:
    assert fleet.broker.log is not None
    return fleet.broker.log.read_text(errors="replace")


def _denied(log: str, client_id: str, topic: str) -> bool:
    """The broker's log line for a publish its ACL refused (mosquitto 2: "Denied PUBLISH from <client> (d0, q1, ..., '<topic>', ...")."""
    return re.search(rf"Denied PUBLISH from {re.escape(client_id)} \([^)]*'{re.escape(topic)}'", log) is not None


def test_device_cannot_publish_on_another_devices_topics(secure_broker: SecureBroker, clients: list[mqtt.Client]) -> None:
    victim = ("audit", "status", "enroll", "gallery/ack", "gallery/resync", "report/status")
    from_hub = ("gallery", "ack", "report")
    hub, hub_sees = _connected(secure_broker, clients, "hub", "hub-watch", tuple(protocol.device_topic(d, leaf) for d in ("door-a", "door-b") for leaf in victim))
    door_b, door_b_sees = _connected(secure_broker, clients, "door-b", "door-b", tuple(protocol.device_topic("door-b", leaf) for leaf in from_hub))
    attacker, attacker_sees = _connected(secure_broker, clients, "door-a", "door-a")

    # door-a, taken over, speaks for door-b towards the hub and for the hub towards door-b.
    for leaf in (*victim, *from_hub):
        assert _publish(attacker, attacker_sees, protocol.device_topic("door-b", leaf), b'{"forged": true}') == NOT_AUTHORIZED, leaf
    # The same client on its own topic is let through: the refusals were the ACL, not the client.
    assert _publish(attacker, attacker_sees, protocol.device_topic("door-a", "audit"), b"door-a's own") == 0
    assert _publish(attacker, attacker_sees, protocol.device_topic("door-a", "report/status"), b"door-a's answer") == 0
    assert _publish(hub, hub_sees, protocol.device_topic("door-b", "gallery"), b"the hub's bundle") == 0
    assert _publish(hub, hub_sees, protocol.device_topic("door-b", "report"), b"the hub's report") == 0

    assert wait_for(lambda: hub_sees.got(protocol.device_topic("door-a", "audit")) == [b"door-a's own"], 10)
    assert wait_for(lambda: hub_sees.got(protocol.device_topic("door-a", "report/status")) == [b"door-a's answer"], 10)
    assert wait_for(lambda: door_b_sees.got(protocol.device_topic("door-b", "gallery")) == [b"the hub's bundle"], 10)
    assert wait_for(lambda: door_b_sees.got(protocol.device_topic("door-b", "report")) == [b"the hub's report"], 10)
    assert all(hub_sees.got(protocol.device_topic("door-b", leaf)) == [] for leaf in victim)
    assert door_b_sees.got(protocol.device_topic("door-b", "ack")) == []
    log = _broker_log(secure_broker)
    assert all(_denied(log, "door-a", protocol.device_topic("door-b", leaf)) for leaf in (*victim, *from_hub))


def test_device_cannot_publish_a_group_gallery(secure_broker: SecureBroker, clients: list[mqtt.Client]) -> None:
    staff, night = protocol.group_gallery_topic("staff"), protocol.group_gallery_topic("night")
    hub, hub_sees = _connected(secure_broker, clients, "hub", "hub-watch", (staff, night))
    door_b, door_b_sees = _connected(secure_broker, clients, "door-b", "door-b", (staff,))
    door_c, door_c_sees = _connected(secure_broker, clients, "door-c", "door-c", (night,))
    attacker, attacker_sees = _connected(secure_broker, clients, "door-a", "door-a")

    # Its own group (it may read it) and another group: a device never writes a gallery.
    assert _publish(attacker, attacker_sees, staff, b'{"type": "bundle", "forged": true}') == NOT_AUTHORIZED
    assert _publish(attacker, attacker_sees, night, b'{"type": "bundle", "forged": true}') == NOT_AUTHORIZED
    assert _publish(hub, hub_sees, staff, b"staff bundle") == 0
    assert _publish(hub, hub_sees, night, b"night bundle") == 0

    assert wait_for(lambda: door_b_sees.got(staff) == [b"staff bundle"] and door_c_sees.got(night) == [b"night bundle"], 10)
    assert wait_for(lambda: hub_sees.got(staff) == [b"staff bundle"] and hub_sees.got(night) == [b"night bundle"], 10)
    log = _broker_log(secure_broker)
    assert _denied(log, "door-a", staff) and _denied(log, "door-a", night)


def test_device_taking_another_devices_client_id_reads_nothing_of_it(secure_broker: SecureBroker, clients: list[mqtt.Client]) -> None:
    """The hole docs/sync.md names: door-a's login with client id "door-b" takes door-b's session
    over. What is queued there is checked against door-a's ACL on delivery, so none of it reaches
    the impostor."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    gallery = protocol.device_topic("door-b", protocol.GALLERY)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    door_b, door_b_sees = _client(secure_broker, "door-b", "door-b")
    subscribed = threading.Event()
    door_b.on_subscribe = lambda *_a: subscribed.set()
    door_b.connect("127.0.0.1", secure_broker.port, clean_start=False, properties=props)
    door_b.loop_start()
    assert wait_for(lambda: door_b_sees.connack is not None, 10) and not door_b_sees.connack.is_failure
    door_b.subscribe([(gallery, 1)])
    assert subscribed.wait(10)
    door_b.disconnect()
    door_b.loop_stop()
    hub, hub_sees = _connected(secure_broker, clients, "hub", "hub-1")
    assert _publish(hub, hub_sees, gallery, b"bundle queued for door-b") == 0
    impostor, impostor_sees = _client(secure_broker, "door-a", "door-b")
    impostor.connect("127.0.0.1", secure_broker.port, clean_start=False, properties=props)
    impostor.loop_start()
    clients.append(impostor)
    assert wait_for(lambda: impostor_sees.connack is not None, 10) and impostor_sees.connack.value == 0
    # The queued message is handed out (or dropped) on connect; a message the impostor may read,
    # sent after it on its own topic, shows the delivery ran and the bundle was not among it.
    own = protocol.device_topic("door-a", protocol.GALLERY)
    granted = threading.Event()
    impostor.on_subscribe = lambda *_a: granted.set()
    impostor.subscribe([(own, 1)])
    assert granted.wait(10)
    assert _publish(hub, hub_sees, own, b"door-a's bundle") == 0
    assert wait_for(lambda: impostor_sees.got(own) == [b"door-a's bundle"], 10)
    assert impostor_sees.got(gallery) == []


def _refused(client: mqtt.Client, watch: Watch, port: int) -> bool:
    """True when the broker turns the client away: TLS handshake refused, or CONNACK a failure."""
    try:
        client.connect("127.0.0.1", port)
    except (OSError, ssl.SSLError):
        return True
    client.loop_start()
    try:
        assert wait_for(lambda: watch.connack is not None or watch.disconnected, 10), "neither CONNACK nor disconnect"
        return watch.connack is None or watch.connack.is_failure
    finally:
        client.disconnect()
        client.loop_stop()


def test_wrong_password_is_refused(secure_broker: SecureBroker, clients: list[mqtt.Client]) -> None:
    wrong, watch = _client(secure_broker, "door-a", "door-a", password="guessed-" + secure_broker.logins["door-a"].password)
    assert _refused(wrong, watch, secure_broker.port) and watch.connack is not None and watch.connack.value == NOT_AUTHORIZED
    # door-a's certificate and password, logging in as door-b: the password is door-b's or nothing.
    other, other_watch = _client(secure_broker, "door-a", "door-b", username="door-b")
    assert _refused(other, other_watch, secure_broker.port) and other_watch.connack.value == NOT_AUTHORIZED
    assert _broker_log(secure_broker).count("disconnected, not authorised") == 2
    _connected(secure_broker, clients, "door-a", "door-a")  # the right password with the same certificate gets in


def test_client_without_certificate_is_refused(secure_broker: SecureBroker, clients: list[mqtt.Client]) -> None:
    # The right user name and password, but no client certificate.
    bare, watch = _client(secure_broker, "door-a", "door-a", cert=False)
    assert _refused(bare, watch, secure_broker.port)
    assert wait_for(lambda: "peer did not return a certificate" in _broker_log(secure_broker), 10), _broker_log(secure_broker)[-2000:]
    _connected(secure_broker, clients, "door-a", "door-a")


def _sync_run(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(config), "sync", "run"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    return _exited(proc)


def _exited(proc: subprocess.Popen[str]) -> str:
    """Its stderr once it exits; killed (and the test failed) when it is still running after 60 s."""
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running after 60 s: {proc.communicate()[1][-2000:]}") from None


def _loopback_name() -> str:
    """A host name that is not written as loopback (so the rule applies) but resolves to it
    from /etc/hosts, so an insecure agent's traffic stays on this machine."""
    name = socket.gethostname()
    hosts = Path("/etc/hosts").read_text().split("\n") if Path("/etc/hosts").exists() else []
    for line in hosts:
        fields = line.split("#")[0].split()
        if len(fields) > 1 and name in fields[1:] and fields[0].startswith("127."):
            return name
    unavailable(f"this host's name {name!r} is not a 127.x name in /etc/hosts")
    raise AssertionError


def test_agent_refuses_a_broker_off_this_host_without_tls(broker: Broker, tmp_path: Path) -> None:
    # A name that is not loopback as written, so the rule refuses it, and that never resolves
    # (RFC 6761 .invalid): were the rule broken, the agent would fail to connect anywhere — and
    # exit otherwise than with the refusal.
    host = "facegate-broker.invalid"
    device = make_device(tmp_path, broker.port, "door-a", broker_host=host)
    proc = _sync_run(device.config_file)
    err = _exited(proc)
    assert proc.returncode == 2, err
    assert f"facegate: error: sync.broker_host: {host!r} is not on this host" in err and "sync.allow_insecure_broker = true" in err
    # The hub's client (hub serve, admin push) is built by the same rule; building it connects nothing.
    with pytest.raises(ConfigError, match=r"hub\.broker_host: '10\.1\.2\.3' is not on this host"):
        mqtt_client(HubConfig(broker_host="10.1.2.3"), "hub-1")
    mqtt_client(HubConfig(broker_host="10.1.2.3", allow_insecure_broker=True), "hub-1")


def test_agent_starts_with_allow_insecure_broker_and_warns(broker: Broker, tmp_path: Path) -> None:
    from bench.harness.hub_client import HubClient

    host = _loopback_name()
    device = make_device(tmp_path, broker.port, "door-a", broker_host=host, allow_insecure_broker=True)
    hub = HubClient(broker.port, {"door-a": device.identity.signing_key.public_key()})
    proc = _sync_run(device.config_file)
    try:
        assert hub.wait(lambda: hub.status.get("door-a", {}).get("online") is True, timeout=60)
    finally:
        err = _stop(proc)
        hub.close()
    assert f"sync: broker {host} is reached WITHOUT TLS (allow_insecure_broker = true)" in err


def test_password_file_others_can_read_is_refused(secure_broker: SecureBroker, tmp_path: Path, clients: list[mqtt.Client]) -> None:
    login = secure_broker.logins["door-a"]
    login.password_file.chmod(0o644)
    device = make_device(tmp_path, secure_broker.port, "door-a", **secure_broker.config("door-a"))
    proc = _sync_run(device.config_file)
    err = _exited(proc)
    assert proc.returncode == 2, err
    assert f"sync.password_file: {login.password_file} is readable by group or others (mode 0644)" in err
    # The same file, private again: the agent logs in and the hub sees it online.
    login.password_file.chmod(0o600)
    _hub, hub_sees = _connected(secure_broker, clients, "hub", "hub-watch", (protocol.device_topic("door-a", protocol.STATUS),))
    proc = _sync_run(device.config_file)
    try:
        assert wait_for(lambda: any(b'"online":true' in p for p in hub_sees.got(protocol.device_topic("door-a", protocol.STATUS))), 60)
    finally:
        _stop(proc)


def test_password_is_read_from_a_systemd_credential(secure_broker: SecureBroker, tmp_path: Path, clients: list[mqtt.Client]) -> None:
    # systemd's LoadCredential= file: mode 0440 here stands for the ACL mask it shows in the group bits.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "facegate-mqtt").write_text(secure_broker.logins["door-a"].password + "\n")
    (credentials / "facegate-mqtt").chmod(0o440)
    keys = {**secure_broker.config("door-a"), "password_file": "facegate-mqtt"}
    device = make_device(tmp_path, secure_broker.port, "door-a", **keys)
    _hub, hub_sees = _connected(secure_broker, clients, "hub", "hub-watch", (protocol.device_topic("door-a", protocol.STATUS),))
    proc = _sync_run(device.config_file, {"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        assert wait_for(lambda: any(b'"online":true' in p for p in hub_sees.got(protocol.device_topic("door-a", protocol.STATUS))), 60)
    finally:
        _stop(proc)
    # Without $CREDENTIALS_DIRECTORY the bare name is a path relative to the working directory: not there.
    proc = _sync_run(device.config_file)
    err = _exited(proc)
    assert proc.returncode == 2 and "sync.password_file: cannot open facegate-mqtt" in err, err


def test_docs_show_the_shipped_acl() -> None:
    docs = (REPO / "docs" / "sync.md").read_text()
    block = re.search(r"```\n(# mosquitto ACL for a facegate fleet.*?)```", docs, re.S)
    assert block is not None, "docs/sync.md has no ACL block"
    assert block.group(1) == SHIPPED_ACL.read_text()
