"""Issue 22 acceptance for audit retention, all real processes: mosquitto + `facegate hub serve` +
a device's `facegate sync run` whose clock is moved days ahead (a controllable clock: the records
it reads were written "days ago"). The device prunes only what the hub acknowledged, twice, and
`facegate audit verify` stays green (checkpoint and hub anchor signatures verified); the
checkpoints travel to the hub like any record; the hub prunes its own copy behind its signed
checkpoint, twice, and `admin audit verify` stays green; an edit of a record the hub kept after
its prune is caught."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from bench.harness.mqtt_broker import Broker
from bench.harness.sync_helpers import new_device
from edge.audit.journal import AuditLog
from edge.config import load_config
from edge.service.metrics import outbox_depth
from sync.hub.service import Hub
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
# `facegate ARGS...` with time.time_ns moved DAYS ahead (what the journal stamps and the pruner compares with).
SHIFTED = ("import sys, time; real = time.time_ns; shift = int(float(sys.argv[1]) * 86400e9); time.time_ns = lambda: real() + shift; "
           "from edge.cli.main import main; sys.exit(main(sys.argv[2:]))")


def _facegate(days: float, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SHIFTED, str(days), "--config", str(config), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def _sync(days: float, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SHIFTED, str(days), "--config", str(config), "sync", "run"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, err[-3000:]
    return err


def test_device_and_hub_prune_twice_and_verification_stays_green(broker: Broker, tmp_path: Path) -> None:
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nbroker_port = {broker.port}\nclient_id = "hub-1"\naudit_retention_days = 1\n')
    assert _facegate(0, hub_cfg, "hub", "identity", "--write", str(tmp_path / "hubkeys")).returncode == 0
    data, _kek, identity = new_device(tmp_path, "door-1")
    (tmp_path / "door-1.json").write_text(json.dumps(identity.public()))
    assert _facegate(0, hub_cfg, "admin", "device", "add", "door-1", "--identity", str(tmp_path / "door-1.json")).returncode == 0
    config = tmp_path / "door-1.toml"
    config.write_text(
        f'[gallery]\ndata_dir = "{data}"\nkey_file = "{data / "kek.key"}"\n[audit]\nretention_days = 1\n'
        f'[sync]\nbroker_host = "127.0.0.1"\nbroker_port = {broker.port}\ndevice_id = "door-1"\n'
        f'hub_sign_key_file = "{tmp_path / "hubkeys" / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\nack_timeout_s = 2.0\n'
    )
    with AuditLog.open(data) as log:
        for i in range(8):
            log.append("decision", {"decision": "unknown", "track_id": i})
    serve = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hub = Hub(load_config(hub_cfg).hub)

    def device_verify() -> dict:
        done = _facegate(0, config, "audit", "verify", "--json")
        return {"code": done.returncode, **json.loads(done.stdout)}

    def hub_verify(days: float = 0) -> dict:
        done = _facegate(days, hub_cfg, "admin", "audit", "verify", "--json")
        return {"code": done.returncode, **json.loads(done.stdout)}

    def hub_holds(seq: int) -> bool:
        return hub.store.device("door-1").audit_seq >= seq

    try:
        # Round 1: the device's clock 3 days on; records 1..8 are acknowledged, then pruned behind checkpoint 9.
        sync = _sync(3, config)
        assert wait_for(lambda: AuditLog.open(data).first_seq() == 9, 90), "the device did not prune after the hub's ack"
        assert wait_for(lambda: hub_holds(9) and outbox_depth(data) == 0, 60), "the checkpoint record was not acknowledged"
        _stop(sync)
        first = device_verify()
        assert first["code"] == 0 and first["ok"] and first["pruned_upto"] == 8, first
        assert first["checkpoint"]["signature"] == "verified" and first["anchor"]["signature"] == "verified", first
        # The hub, 2 days on: records 1..8 go, the checkpoint record (stamped 3 days on) stays.
        pruned = json.loads(_facegate(2, hub_cfg, "admin", "audit", "prune").stdout)
        assert pruned == {"pruned": {"door-1": 8}}, pruned
        assert hub_verify()["devices"] == [{"device": "door-1", "records": 1, "pruned": 8, "ok": True, "problem": None}]

        # Round 2: more records, the clock 10 days on: 9..13 acknowledged and pruned behind checkpoint 14.
        with AuditLog.open(data) as log:
            for i in range(4):
                log.append("decision", {"decision": "unknown", "track_id": 100 + i})
        sync = _sync(10, config)
        assert wait_for(lambda: AuditLog.open(data).first_seq() == 14, 90), "the device did not prune a second time"
        assert wait_for(lambda: hub_holds(14) and outbox_depth(data) == 0, 60)
        _stop(sync)
        second = device_verify()
        assert second["code"] == 0 and second["pruned_upto"] == 13 and second["checkpoint"]["signature"] == "verified", second
        pruned = json.loads(_facegate(5, hub_cfg, "admin", "audit", "prune").stdout)
        assert pruned == {"pruned": {"door-1": 5}}, pruned  # 9..13; 14 is stamped 10 days on
        assert hub_verify()["devices"] == [{"device": "door-1", "records": 1, "pruned": 13, "ok": True, "problem": None}]
        # An edit of what the hub kept after its prunes is caught.
        hub.store.db.execute("UPDATE audit SET body=replace(body, 'pruned', 'PRUNED') WHERE device='door-1' AND seq=14")
        broken = hub_verify()
        assert broken["code"] == 1 and "record 14" in broken["devices"][0]["problem"], broken
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
        print(serve.communicate(timeout=60)[1][-3000:])
        hub.close()
