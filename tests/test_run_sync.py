"""`facegate run` with sync on, against a real mosquitto: decisions reach the hub as signed audit
records, and a person pushed by the hub in a signed bundle is granted from the next track on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.gallery.records import PersonProfile
from edge.identity import raw_public
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.imageio import load_image
from sync import protocol
from sync.bundle import SyncPerson
from tests.hub_client import HubClient
from tests.mjpeg_server import MjpegServer, free_port, load_jpegs
from tests.mqtt_broker import MOSQUITTO, Broker
from tests.sync_helpers import Hub, new_device

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"
DEVICE = "kiosk-7"

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (apt-get install mosquitto)")


def test_daemon_ships_decisions_and_applies_a_hub_bundle(perception: Perception, tmp_path: Path) -> None:
    data_dir, _kek, identity = new_device(tmp_path, DEVICE)
    hub_keys, hub_seal = Hub(), X25519PrivateKey.generate()
    (tmp_path / "hub_sign.pub").write_text(raw_public(hub_keys.key.public_key()).hex())
    config = tmp_path / "config.toml"
    # Liveness off: the clip is broadcast footage (a replay, to a liveness check).
    config.write_text(
        f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[liveness]\nenabled = false\n'
        f'[sync]\nbroker_host = "127.0.0.1"\ndevice_id = "{DEVICE}"\ngroups = ["staff"]\n'
        f'hub_sign_key_file = "{tmp_path / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\n'
    )
    frames = load_jpegs(CLIP, 200)[90:180]
    black = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    camera = MjpegServer(frames + [black] * 30, free_port()).start()
    with Broker(tmp_path / "broker") as broker:
        config.write_text(config.read_text() + f"broker_port = {broker.port}\n")
        hub = HubClient(broker.port, {DEVICE: identity.signing_key.public_key()}, hub_seal)
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
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            hub.close()
            camera.stop()
    assert proc.returncode == 0, err
    grants = [d for d in decisions() if d["decision"] == "grant"]
    assert grants[0]["person_uid"] == "a1" * 16
    assert "reloaded the config and the gallery (1 people)" in err
    kinds = [r.kind for r in hub.records[DEVICE]]
    assert kinds[0] == "start" and "gallery_update" in kinds and not hub.problems
    # The live event stream (stdout here) agrees with the journal.
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["person"] for e in events if e["decision"] == "grant"][:1] == ["Lin Manuel Miranda"]
