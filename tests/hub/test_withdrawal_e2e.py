"""Issue 22 acceptance, all real processes: mosquitto + `facegate hub serve` + a kiosk `facegate
run` (CURVE control socket, an MJPEG camera showing an LFW face) + a second device's `facegate
sync run`. The admin enrolls the person at the hub and pushes to both devices; at the kiosk the
person withdraws (`withdraw` → token → confirm): they are erased there, the device-signed
withdrawal reaches the hub, which erases them and pushes the erase; both devices confirm it, the
second device's gallery no longer holds them, and `admin audit verify` passes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.config import load_config
from edge.outputs.zmq_auth import allow_client, write_keypair
from sync.hub.service import Hub
from tests.attacks.test_zmq_control import Client, Served
from tests.conftest import DATA, unavailable
from tests.support.cli import facegate_cli
from tests.support.mjpeg_server import MjpegServer, free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
LFW = DATA / "lfw" / "images" / "Tony_Blair"
ENROLL = ("Tony_Blair_0018.jpg", "Tony_Blair_0032.jpg", "Tony_Blair_0048.jpg")
IN_FRONT = "Tony_Blair_0064.jpg"


def test_a_kiosk_withdrawal_reaches_the_hub_and_a_second_device(broker: Broker, model_store, tmp_path: Path) -> None:
    if not all((LFW / f).exists() for f in (*ENROLL, IN_FRONT)):
        unavailable(f"LFW images not found under {LFW}")
    (tmp_path / "enroll" / "Tony_Blair").mkdir(parents=True)
    for f in ENROLL:
        (tmp_path / "enroll" / "Tony_Blair" / f).symlink_to(LFW / f)
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_port = {broker.port}\nclient_id = "hub-1"\n')
    facegate_cli(hub_cfg, "hub", "identity", "--write", str(tmp_path / "hubkeys"))
    server_pub, server_secret, _ = write_keypair(tmp_path / "server")
    client_secret = write_keypair(tmp_path / "kiosk1")[1]
    allow_client(tmp_path / "allowed", client_secret)
    control = f"tcp://127.0.0.1:{free_port()}"
    configs, data_dirs = {}, {}
    for device in ("kiosk-a", "door-b"):
        data_dirs[device], _kek, identity = new_device(tmp_path, device)
        (tmp_path / f"{device}.json").write_text(json.dumps(identity.public()))
        facegate_cli(hub_cfg, "admin", "device", "add", device, "--identity", str(tmp_path / f"{device}.json"), "--group", "shop")
        zmq = (f'[zmq]\ncontrol = "{control}"\ncurve_secret_key_file = "{server_secret}"\nallowed_clients_dir = "{tmp_path / "allowed"}"\n'
               'withdraw_clients = ["kiosk1"]\n') if device == "kiosk-a" else ""
        configs[device] = tmp_path / f"{device}.toml"
        configs[device].write_text(
            f'[gallery]\ndata_dir = "{data_dirs[device]}"\nkey_file = "{data_dirs[device] / "kek.key"}"\n[liveness]\nenabled = false\n'
            f'[metrics]\nenabled = false\n{zmq}[sync]\nbroker_port = {broker.port}\nbroker_host = "127.0.0.1"\ndevice_id = "{device}"\ngroups = ["shop"]\n'
            f'hub_sign_key_file = "{tmp_path / "hubkeys" / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\nack_timeout_s = 2.0\n'
        )
    added = json.loads(facegate_cli(hub_cfg, "admin", "person", "add", "--from-dir", str(tmp_path / "enroll"), "--group", "shop", "--json").stdout)
    uid = added[0]["uid"]
    # The face for 10 s, then 1 s of black: a track decided before the bundle arrived ends, and the next one is recognised.
    face = (LFW / IN_FRONT).read_bytes()
    black = cv2.imencode(".jpg", np.zeros(cv2.imdecode(np.frombuffer(face, np.uint8), cv2.IMREAD_COLOR).shape, np.uint8))[1].tobytes()
    camera = MjpegServer([face] * 40 + [black] * 4, free_port(), fps=4.0).start()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(configs["kiosk-a"]), "run", "--source", camera.url], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env),
        subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(configs["door-b"]), "sync", "run"], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env),
    ]
    hub = Hub(load_config(hub_cfg).hub)
    served = Served(procs[1], control, "", server_pub, client_secret, client_secret, configs["kiosk-a"])
    try:
        assert wait_for(lambda: all(d.status.get("online") for d in hub.store.devices()), 120), "both devices online at the hub"
        seq = json.loads(facegate_cli(hub_cfg, "admin", "push", "--json").stdout)[0]["seq"]
        assert wait_for(lambda: {a[0] for a in hub.store.gallery_acks() if a[1] == "group:shop" and a[2] == seq and a[3]} == {"kiosk-a", "door-b"}, 90)
        with Client(served, client_secret) as kiosk:
            answer: dict = {}

            def known() -> bool:
                nonlocal answer
                answer = kiosk.ask({"op": "identify", "wait_ms": 2000}) or {}
                return answer.get("status") == "known"

            erased: dict = {}

            def withdrawn() -> bool:  # asked and confirmed within one pass of the face (else asked again)
                nonlocal erased
                if not known():
                    return False
                asked = kiosk.ask({"op": "withdraw", "wait_ms": 2000}) or {}
                if asked.get("ok"):
                    assert asked["person_uid"] == uid, asked
                    erased = kiosk.ask({"op": "withdraw", "token": asked["token"], "confirm": True}) or {}
                return erased.get("ok", False)

            assert wait_for(withdrawn, 180), (answer, erased)
            assert erased == {"v": 1, "ok": True, "erased": True, "person_uid": uid}
        # The hub erases on the device's signed word and pushes; both devices confirm the erasure.
        assert wait_for(lambda: uid not in {p.uid for p in hub.store.persons()}, 60), "the hub did not erase the withdrawn person"
        assert wait_for(lambda: sorted((d, c is not None) for _u, d, _r, c in hub.store.erasures(uid)) == [("door-b", True), ("kiosk-a", True)], 90), \
            hub.store.erasures(uid)
        history = [h["detail"] for h in json.loads(facegate_cli(hub_cfg, "admin", "review", "history", "--json").stdout) if h["action"] == "erase"]
        assert [(h["by"], h["device"]) for h in history] == [("kiosk-withdrawal", "kiosk-a")], history
        listed = json.loads(facegate_cli(configs["door-b"], "gallery", "list", "--json").stdout)
        assert listed == [], listed
        verify = json.loads(facegate_cli(hub_cfg, "admin", "audit", "verify", "--json").stdout)
        assert all(d["ok"] for d in verify["devices"]), verify
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errs = [proc.communicate(timeout=60)[1] for proc in procs]
        for err in errs:
            print(err[-3000:])
        camera.stop()
        hub.close()
    assert [proc.returncode for proc in procs] == [0, 0, 0], errs
