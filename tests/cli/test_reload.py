"""A bad reload never stops `facegate run`: each kind of bad config is refused, audited and
counted, the daemon goes on deciding with the config it had — and with the gallery on disk, so a
revocation applies while the file is broken — and a good reload still applies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from tests.cli.test_run import CLIP, LMM, facegate, read_events
from tests.support.mjpeg_server import MjpegServer, free_port, load_jpegs
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else None


def journal(data: Path) -> list[dict]:
    tail = facegate("audit", "tail", "--data-dir", str(data), "-n", "500", "--json").stdout
    return [json.loads(line) for line in tail.splitlines()]


def test_bad_reloads_are_refused_and_the_daemon_keeps_deciding(model_store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert facegate("keys", "init", "--data-dir", str(data)).returncode == 0
    assert facegate("gallery", "enroll", "--data-dir", str(data), "--person", "Lin Manuel Miranda", str(LMM)).returncode == 0
    port = free_port()
    base = f"[liveness]\nenabled = false\n[metrics]\nport = {port}\n"
    config = tmp_path / "config.toml"
    config.write_text(base)
    # Each loop of the clip (a second of black between) is a new track, so decisions keep coming.
    frames = load_jpegs(CLIP, 200)[90:180]
    black = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    server = MjpegServer(frames + [black] * 30, free_port()).start()
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(data), "--source", server.url, "--events", str(events)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    # What each bad file is, and the error its refusal names.
    bad = [
        ("[liveness]\nenabled = false\n[metrics\n", "ConfigError"),  # not TOML
        (None, "ConfigError"),  # the file is gone
        (base + "[models]\ndir = \"/nonexistent/models\"\n", "ModelError"),  # loads, but the models do not
        (base + "[gallery]\nkey_file = \"/nonexistent/kek.key\"\n", "KeyfileError"),  # the gallery does not open
        (base + "[[door]]\nname = \"front\"\ncamera = \"cam1\"\n", "ConfigError"),  # a door on a camera that is not running
    ]
    refused_alive = []
    try:
        assert wait_for(lambda: any(e["decision"] == "grant" for e in read_events(events)), 90), "no grant before the reloads"
        old_threshold = next(e["threshold"] for e in read_events(events) if e["decision"] == "grant")
        assert metric(port, "facegate_config_reload_failures_total") == 0
        for n, (text, _error) in enumerate(bad, start=1):
            if text is None:
                config.unlink()
            else:
                config.write_text(text)
            proc.send_signal(signal.SIGHUP)
            counted = wait_for(lambda n=n: metric(port, "facegate_config_reload_failures_total") == n, 60)
            refused_alive.append((counted, proc.poll() is None))
        # Still deciding, with the old config: a new grant after the last refusal, at the old threshold.
        seen = len(read_events(events))
        assert wait_for(lambda: any(e["decision"] == "grant" for e in read_events(events)[seen:]), 90), "no decision after the refusals"
        after_refusals = [e for e in read_events(events)[seen:] if e["decision"] == "grant"]
        # The file is still broken; a revocation (here by hand, in the field a hub bundle) still applies.
        removed = facegate("gallery", "remove", "--data-dir", str(data), "--person", "Lin Manuel Miranda")
        assert removed.returncode == 0, removed.stderr
        proc.send_signal(signal.SIGHUP)
        revoked = wait_for(lambda: metric(port, "facegate_config_reload_failures_total") == len(bad) + 1, 60)
        seen = len(read_events(events))
        assert wait_for(lambda: len(read_events(events)) > seen, 90), "no decision after the revocation"
        after_revocation = read_events(events)[seen:]
        # A good file applies: an explicit threshold no face reaches.
        config.write_text(base + "[match]\nthreshold = 0.99\n")
        proc.send_signal(signal.SIGHUP)
        applied = wait_for(lambda: any(e["threshold"] == 0.99 for e in read_events(events)), 90)
        failures_after_good = metric(port, "facegate_config_reload_failures_total")
        alive_at_end = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        server.stop()
    assert refused_alive == [(True, True)] * len(bad), err
    assert all(e["threshold"] == old_threshold for e in after_refusals)
    assert revoked and all(e["decision"] == "unknown" for e in after_revocation)
    assert applied and failures_after_good == len(bad) + 1 and alive_at_end, err
    assert proc.returncode == 0, err
    assert err.count("reload refused, still running on the previous config") == len(bad) + 1
    assert err.count("reopened the gallery (1 people) under the previous config") == len(bad)
    assert "reopened the gallery (0 people) under the previous config" in err
    assert "Traceback" not in err  # our own errors are one line each
    records = journal(data)
    refusals = [r["body"] for r in records if r["kind"] == "config_reload_refused"]
    assert [r["error"] for r in refusals] == [error for _text, error in bad] + ["ConfigError"]
    assert "cam1" in refusals[4]["reason"] and "/nonexistent/models" in refusals[2]["reason"]
    # Each refusal is followed by the gallery reopened under the previous config; the good file
    # is the one reload recorded as a new config, after every refusal.
    reloads = [(i, r["body"]) for i, r in enumerate(records) if r["kind"] == "config_reload"]
    assert [b.get("config") for _i, b in reloads] == ["previous"] * (len(bad) + 1) + [None]
    assert reloads[-1][0] > max(i for i, r in enumerate(records) if r["kind"] == "config_reload_refused")
    after = [e for e in read_events(events) if e["threshold"] == 0.99]
    assert after and all(e["decision"] == "unknown" for e in after)
    assert facegate("audit", "verify", "--data-dir", str(data)).returncode == 0
