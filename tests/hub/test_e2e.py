"""Issue 8 acceptance, all real processes: mosquitto + `facegate hub serve` + two `facegate run`
device daemons on image-folder sources, on a broker secured as docs/sync.md says (issue 18): TLS
with client certificates, a password per user and the shipped per-device ACL, which denies
nothing of the happy path. The admin enrolls two LFW people from some of their
photos (CLI, bulk from a folder tree) → push → both devices ack → both devices grant the other
photos → the audit records reach the hub and `admin audit verify` passes → erase → both devices
confirm → that person is no longer granted (the other one still is)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bench.harness.mqtt_broker import SecureBroker
from bench.harness.sync_helpers import new_device
from edge.config import load_config
from sync.hub.service import Hub
from tests.conftest import DATA, unavailable
from tests.support.cli import facegate_cli
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
LFW = DATA / "lfw" / "images"
# Four photos each to enroll from (Colin Powell's include a two-face and a turned photo, which
# the report must reject), and one held-out photo each that the devices are shown.
PEOPLE = {"Tony_Blair": "Tony_Blair_0064.jpg", "Colin_Powell": "Colin_Powell_0133.jpg"}
DEVICES = ("door-a", "door-b")


def _frames(folder: Path, cycles: int) -> None:
    """Each person's held-out photo for 4 frames, then 2 black frames (a scene cut ends the track)."""
    folder.mkdir()
    black = folder / "black.png"
    # Same size as the photos: edge/video/track.py's scene-cut check assumes one frame size per source.
    shape = cv2.imread(str(LFW / next(iter(PEOPLE)) / next(iter(PEOPLE.values())))).shape
    cv2.imwrite(str(black), np.zeros(shape, np.uint8))
    n = 0
    for _ in range(cycles):
        for name, probe in PEOPLE.items():
            for src in [LFW / name / probe] * 4 + [black] * 2:
                (folder / f"{n:05d}{src.suffix}").symlink_to(src)
                n += 1


def _toml(table: dict[str, object]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def test_enroll_push_grant_audit_erase(secure_broker: SecureBroker, tmp_path: Path) -> None:
    if not all((LFW / name / probe).exists() for name, probe in PEOPLE.items()):
        unavailable(f"LFW images not found under {LFW}")
    enroll = tmp_path / "enroll"
    for name in PEOPLE:
        (enroll / name).mkdir(parents=True)
        for src in sorted((LFW / name).iterdir())[:4]:
            (enroll / name / src.name).symlink_to(src)
    frames = tmp_path / "frames"
    _frames(frames, 40)
    procs: list[subprocess.Popen[str]] = []
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nclient_id = "hub-1"\n' + _toml(secure_broker.config("hub")))
    keys = json.loads(facegate_cli(hub_cfg, "hub", "identity", "--write", str(tmp_path / "hubkeys")).stdout)
    assert len(keys["hub_sign_key"]) == 64
    configs = {}
    for device in DEVICES:
        data_dir, _kek, identity = new_device(tmp_path, device)
        (tmp_path / f"{device}.json").write_text(json.dumps(identity.public()))
        facegate_cli(hub_cfg, "admin", "device", "add", device, "--identity", str(tmp_path / f"{device}.json"), "--group", "staff")
        configs[device] = tmp_path / f"{device}.toml"
        configs[device].write_text(
            f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[liveness]\nenabled = false\n'
            f'[[camera]]\nname = "{device}"\nsource = "{frames}"\nfps = 4.0\n'
            f'[sync]\ndevice_id = "{device}"\ngroups = ["staff"]\n'
            f'hub_sign_key_file = "{tmp_path / "hubkeys" / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\nack_timeout_s = 2.0\n'
            + _toml(secure_broker.config(device))
        )
    # Bulk enrollment with the per-photo report.
    added = json.loads(facegate_cli(hub_cfg, "admin", "person", "add", "--from-dir", str(enroll), "--group", "staff", "--json").stdout)
    uids = {e["person"]: e["uid"] for e in added}
    assert all(uids.values()), added
    rejected = [p for e in added for p in e["photos"] if not p["accepted"]]
    assert rejected and all(p["reason"] for p in rejected)  # Colin Powell's two-face and turned photos
    hub = Hub(load_config(hub_cfg).hub)
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for device in DEVICES:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edge.cli.main", "--config", str(configs[device]), "run", "--realtime"], cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            ))
        # The devices are subscribed once their retained status reached the hub.
        wait_until(lambda: all(d.status.get("online") for d in hub.store.devices()), 90, "both devices online at the hub")
        pushed = json.loads(facegate_cli(hub_cfg, "admin", "push", "--json").stdout)
        assert [(p["scope"], p["persons"], sorted(p["devices"])) for p in pushed] == [("group:staff", 2, list(DEVICES))]
        seq = pushed[0]["seq"]
        wait_until(lambda: {a[0] for a in hub.store.gallery_acks() if a[1] == "group:staff" and a[2] == seq and a[3]} == set(DEVICES), 60, "both gallery acks")
        assert hub.store.pending_acks() == []

        def granted(uid: str, device: str, after_us: int = 0) -> list[int]:
            rows = hub.store.audit_query(device=device, kind="decision", since_us=after_us)
            return [r.ts_us for _d, r in rows if r.body.get("decision") == "grant" and r.body.get("person_uid") == uid]

        for device in DEVICES:
            for name, uid in uids.items():
                wait_until(lambda uid=uid, device=device: bool(granted(uid, device)), 60, f"{device} granting {name}")
        verify = json.loads(facegate_cli(hub_cfg, "admin", "audit", "verify", "--json").stdout)
        assert [d["ok"] for d in verify["devices"]] == [True, True] and all(d["records"] > 3 for d in verify["devices"])
        assert verify["alerts"] == []

        # Erase Tony Blair: pushed at once, confirmed by each device.
        erased = uids["Tony Blair"]
        facegate_cli(hub_cfg, "admin", "person", "erase", "Tony Blair")
        wait_until(lambda: all(c is not None for _u, _d, _r, c in hub.store.erasures(erased)) and len(hub.store.erasures(erased)) == 2, 60, "both erasure confirmations")
        confirmed_us = int(time.time() * 1e6)
        # Two more cycles of both photos on both devices: Colin Powell still granted, Tony Blair never again.
        for device in DEVICES:
            wait_until(lambda device=device: len(granted(uids["Colin Powell"], device, confirmed_us)) >= 2, 60, f"{device} granting Colin Powell after the erase")
            assert granted(erased, device, confirmed_us) == []
            after = hub.store.audit_query(device=device, kind="decision", since_us=confirmed_us)
            assert any(r.body.get("decision") == "unknown" for _d, r in after), "the erased person's photo was not decided as unknown"
        assert "Tony Blair" not in facegate_cli(hub_cfg, "admin", "person", "list").stdout
        assert facegate_cli(hub_cfg, "admin", "audit", "verify").returncode == 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errs = [proc.communicate(timeout=60)[1] for proc in procs]
        for err in errs:
            print(err[-3000:])  # shown by pytest when the test fails
        hub.close()
    assert [proc.returncode for proc in procs] == [0, 0, 0], errs
    assert secure_broker.broker.log is not None
    denied = [line for line in secure_broker.broker.log.read_text(errors="replace").splitlines() if "Denied" in line or "not authorised" in line]
    assert denied == [], denied[:10]
