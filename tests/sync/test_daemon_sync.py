"""`facegate run` with sync on, against a real mosquitto: decisions reach the hub as signed audit
records, and a person pushed by the hub in a signed bundle is granted from the next track on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.harness.hub_client import HubClient
from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import Hub, new_device
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile
from edge.identity import raw_public
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.imageio import load_image
from sync import protocol
from tests.support.mjpeg_server import MjpegServer, free_port, load_jpegs

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"
DEVICE = "kiosk-7"


def test_daemon_ships_decisions_and_applies_a_hub_bundle(broker: Broker, perception: Perception, tmp_path: Path) -> None:
    data_dir, _kek, identity = new_device(tmp_path, DEVICE)
    hub_keys, hub_seal = Hub(), X25519PrivateKey.generate()
    (tmp_path / "hub_sign.pub").write_text(raw_public(hub_keys.key.public_key()).hex())
    config = tmp_path / "config.toml"
    # Liveness off: the clip is broadcast footage (a replay, to a liveness check).
    config.write_text(
        f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[liveness]\nenabled = false\n'
        f'[sync]\nbroker_host = "127.0.0.1"\ndevice_id = "{DEVICE}"\ngroups = ["staff"]\n'
        f'hub_sign_key_file = "{tmp_path / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\nhomeassistant = true\n'
    )
    # The door --source cam0 opens; its Home Assistant entity appears with the first decision at it.
    door = '[[door]]\nname = "front"\ncamera = "cam0"\nliveness_required = false\n'
    frames = load_jpegs(CLIP, 200)[90:180]
    black = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    camera = MjpegServer(frames + [black] * 30, free_port()).start()
    config.write_text(config.read_text() + f"broker_port = {broker.port}\n" + door)
    hub = HubClient(broker.port, {DEVICE: identity.signing_key.public_key()}, hub_seal, sign_key=hub_keys.key)
    home = Watcher(broker.port, ["homeassistant/#", protocol.device_topic(DEVICE, "ha/state")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--source", camera.url, "--events", "-"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def decisions() -> list[dict]:
            return [r.body for r in hub.records[DEVICE] if r.kind == "decision"]

        assert hub.wait(lambda: len(decisions()) >= 1, 90), "no decision record reached the hub"
        assert {d["decision"] for d in decisions()} == {"unknown"}
        # The hub enrolls Lin-Manuel Miranda for the device's group, signed and sealed.
        face = perception.faces(load_image(LMM))[0]
        lmm = SyncPerson("a1" * 16, PersonProfile(name="Lin Manuel Miranda", groups=("staff",)), embedder_model_name(perception.cfg), (face.embedding,), (face.quality.score,))
        hub.publish(protocol.group_gallery_topic("staff"), hub_keys.bundle("group:staff", {DEVICE: identity}, [lmm], full=True))
        assert hub.wait(lambda: len(hub.gallery_acks) == 1, 30) and hub.gallery_acks[0]["ok"]
        assert hub.wait(lambda: any(d["decision"] == "grant" for d in decisions()), 60), "the pushed person was never granted"
        # Home Assistant: the door's entity is announced (retained) and its state follows the grant.
        node = f"facegate_{DEVICE}"
        door_topic = f"homeassistant/binary_sensor/{node}/door_front/config"
        assert home.wait(lambda seen: door_topic in seen, 30), sorted(home.seen)
        door_entity = json.loads(home.seen[door_topic])
        assert door_entity["device_class"] == "door" and door_entity["state_topic"] == protocol.device_topic(DEVICE, "ha/state")
        state_topic = protocol.device_topic(DEVICE, "ha/state")
        assert home.wait(lambda seen: json.loads(seen.get(state_topic, b"{}")).get("doors", {}).get("front") == "grant", 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        hub.close()
        home.close()
        camera.stop()
    assert proc.returncode == 0, err
    grants = [d for d in decisions() if d["decision"] == "grant"]
    assert grants[0]["person_uid"] == "a1" * 16 and grants[0]["door"] == "front"
    assert "reloaded the config and the gallery (1 people)" in err
    kinds = [r.kind for r in hub.records[DEVICE]]
    assert kinds[0] == "start" and "gallery_update" in kinds and not hub.problems
    # The live event stream (stdout here) agrees with the journal.
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["person_uid"] for e in events if e["decision"] == "grant"][:1] == ["a1" * 16]


class Watcher:
    """A Home Assistant stand-in: every message on `topics`, the last one per topic."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.seen: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="home-assistant", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen[msg.topic] = bytes(msg.payload)

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(dict(self.seen)):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
