"""`facegate run` against a real mosquitto, a ZeroMQ subscriber and an `--events` file: a
person's display name leaves the device only when `[privacy] show_names` is on.

Everything a subscriber can see is collected — every MQTT message on `#` (events, the retained
Home Assistant state, status, audit records), every ZeroMQ message (decisions and door events),
the `--events` file, stdout and stderr — and searched for the name. Erasure cannot reach any of
them, which is why by default they carry the uid only."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import Hub, new_device
from edge.config import Config, GalleryConfig
from edge.gallery.enroll import enroll_photos
from edge.gallery.loader import open_gallery
from edge.gallery.records import PersonProfile
from edge.identity import raw_public
from edge.perception.faces import Perception
from sync import protocol
from tests.support.mjpeg_server import MjpegServer, free_port, load_jpegs
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"
DEVICE = "lobby-2"
NAME = "Lin Manuel Miranda"


class Everything:
    """Every message on the broker (`#`) and on the daemon's ZeroMQ PUB socket, in order."""

    def __init__(self, mqtt_port: int, zmq_endpoint: str) -> None:
        self.mqtt: list[tuple[str, bytes]] = []
        self.zmq: list[dict] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="listener", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self._keep(self.mqtt, (msg.topic, bytes(msg.payload)))
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("#", qos=1)
        self.client.connect("127.0.0.1", mqtt_port)
        self.client.loop_start()
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(zmq_endpoint)  # before the daemon binds: libzmq connects when it does
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read_zmq, daemon=True)
        self.thread.start()

    def _keep(self, into: list, item: object) -> None:
        with self._lock:
            into.append(item)

    def _read_zmq(self) -> None:
        while not self.stopping.is_set():
            if self.sub.poll(100):
                _topic, payload = self.sub.recv_multipart()
                self._keep(self.zmq, json.loads(payload))

    def zmq_events(self, kind: str) -> list[dict]:
        with self._lock:
            return [e for e in self.zmq if e["type"] == kind]

    def mqtt_json(self, topic: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p in self.mqtt if t == topic]

    def text(self) -> str:
        with self._lock:
            return "\n".join([p.decode("utf-8", "replace") for _t, p in self.mqtt] + [json.dumps(e, ensure_ascii=False) for e in self.zmq])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sub.close(0)
        self.ctx.term()
        self.client.loop_stop()
        self.client.disconnect()


def enroll(data_dir: Path, perception: Perception) -> str:
    cfg = Config(gallery=GalleryConfig(data_dir=str(data_dir), key_file=str(data_dir / "kek.key")))
    with open_gallery(data_dir, cfg, perception.store, create=False) as gallery:
        record, _results = enroll_photos(gallery, perception, PersonProfile(name=NAME), [LMM])
    assert record is not None
    return record.uid


def config_file(tmp_path: Path, data_dir: Path, broker: Broker, zmq_endpoint: str, show_names: bool | None) -> Path:
    hub_pub = tmp_path / "hub_sign.pub"
    hub_pub.write_text(raw_public(Hub().key.public_key()).hex())
    path = tmp_path / "config.toml"
    # Liveness off: the clip is broadcast footage (a replay, to a liveness check).
    path.write_text(
        f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[liveness]\nenabled = false\n[metrics]\nenabled = false\n'
        f'[sync]\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\ndevice_id = "{DEVICE}"\nhub_sign_key_file = "{hub_pub}"\n'
        f'homeassistant = true\nreconnect_min_s = 1\nreconnect_max_s = 2\n[zmq]\nevents = "{zmq_endpoint}"\n'
        + ("" if show_names is None else f"[privacy]\nshow_names = {str(show_names).lower()}\n")
        # open_time_s 1: the door locks again between two loops of the camera, so every loop's
        # grant unlocks it again (an `unlocked` event a late ZeroMQ subscriber can still see).
        + '[[door]]\nname = "front"\ncamera = "cam0"\nliveness_required = false\nopen_time_s = 1.0\n'
    )
    return path


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("show_names", [None, True], ids=["default", "show_names"])
def test_a_name_leaves_the_device_only_when_show_names_is_on(broker: Broker, perception: Perception, tmp_path: Path, show_names: bool | None) -> None:
    data_dir, _kek, _identity = new_device(tmp_path, DEVICE)
    uid = enroll(data_dir, perception)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = config_file(tmp_path, data_dir, broker, endpoint, show_names)
    frames = load_jpegs(CLIP, 200)[90:180]
    black = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    camera = MjpegServer(frames + [black] * 30, free_port()).start()
    seen = Everything(broker.port, endpoint)
    events = tmp_path / "events.jsonl"
    ha_state, mqtt_events = protocol.device_topic(DEVICE, "ha/state"), protocol.device_topic(DEVICE, protocol.EVENTS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--source", camera.url, "--events", str(events)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # A grant on every channel: the --events file, MQTT events (QoS 0, so the daemon must be
        # connected first: the camera loops, each loop a new track), Home Assistant, ZeroMQ.
        def granted() -> dict[str, bool]:
            return {"events file": any(e["decision"] == "grant" for e in read_events(events)),
                    "mqtt events": any(e["decision"] == "grant" for e in seen.mqtt_json(mqtt_events)),
                    "home assistant": any(s["last_decision"] == "grant" for s in seen.mqtt_json(ha_state)),
                    "zmq decision": any(e["decision"] == "grant" for e in seen.zmq_events("decision")),
                    "zmq door": any(e["event"] == "unlocked" for e in seen.zmq_events("door"))}
        assert wait_for(lambda: all(granted().values()), 120), granted()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        seen.close()
        camera.stop()
    assert proc.returncode == 0, err
    grant = next(e for e in read_events(events) if e["decision"] == "grant")
    mqtt_grant = next(e for e in seen.mqtt_json(mqtt_events) if e["decision"] == "grant")
    ha = next(s for s in seen.mqtt_json(ha_state) if s["last_decision"] == "grant")
    zmq_grant = next(e for e in seen.zmq_events("decision") if e["decision"] == "grant")
    unlocked = next(e for e in seen.zmq_events("door") if e["event"] == "unlocked")
    for body in (grant, mqtt_grant, zmq_grant, unlocked):
        assert body["person_uid"] == uid
    # The events file is this user's only, whatever the umask of the shell that started the daemon.
    assert stat.S_IMODE(events.stat().st_mode) == 0o600
    everything = "\n".join([seen.text(), events.read_text(), out, err])
    if show_names:
        assert grant["person"] == mqtt_grant["person"] == zmq_grant["person"] == unlocked["person"] == ha["last_person"] == NAME
        assert NAME in out  # the human line
    else:
        assert ha["last_person"] == uid and uid in out
        assert all("person" not in body for body in (grant, mqtt_grant, zmq_grant, unlocked))
        assert "Miranda" not in everything
