"""`facegate run` as a real process: JSON-line events, SIGHUP reload, clean SIGTERM stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.support.mjpeg_server import MjpegServer, free_port, load_jpegs
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"
KEYS = {"ts", "camera", "track_id", "decision", "person_uid", "score", "latency_ms", "threshold", "frames_used", "models"}


def facegate(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=300, check=False, **kw)


def no_liveness(tmp_path: Path) -> str:
    """These tests are about identity on broadcast footage, which liveness (rightly) calls a
    replay; tests/test_liveness*.py cover that side."""
    path = tmp_path / "config.toml"
    path.write_text("[liveness]\nenabled = false\n")
    return str(path)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_run_writes_events_reloads_on_sighup_and_stops_on_sigterm(model_store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    # An empty gallery first (keys init creates the data dir and its key).
    assert facegate("keys", "init", "--data-dir", str(data)).returncode == 0
    # A live HTTP camera showing Lin-Manuel Miranda on stage, with a second of black between
    # loops: each loop is a new track, so a decision after the reload uses the new gallery.
    frames = load_jpegs(CLIP, 200)[90:180]
    black = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8))[1].tobytes()
    server = MjpegServer(frames + [black] * 30, free_port()).start()
    events = tmp_path / "events.jsonl"
    config = no_liveness(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "--config", config, "run", "--data-dir", str(data),
         "--source", server.url, "--events", str(events)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_for(lambda: len(read_events(events)) >= 1, 60), "no decision from the live camera"
        assert {e["decision"] for e in read_events(events)} == {"unknown"}
        enrolled = facegate("gallery", "enroll", "--data-dir", str(data), "--person", "Lin Manuel Miranda", str(LMM))
        assert enrolled.returncode == 0, enrolled.stderr
        proc.send_signal(signal.SIGHUP)
        granted = wait_for(lambda: any(e["decision"] == "grant" for e in read_events(events)), 60)
        # A broken config on the next SIGHUP is refused: the daemon keeps its door on what it had.
        Path(config).write_text("[liveness]\nenabled = 'yes'\n")
        proc.send_signal(signal.SIGHUP)
        refused = wait_for(lambda: "config_reload_refused" in audit_kinds(data), 30)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        server.stop()
    assert proc.returncode == 0, err
    assert "reloaded the config and the gallery (1 people)" in err
    assert granted, err
    assert refused and still_running and "reload refused" in err and "liveness.enabled" in err, err
    assert "summary:" in err and "decisions:" in err
    lines = read_events(events)
    assert all(set(e) >= KEYS for e in lines)
    # The person enrolled while the daemon ran is recognised after the reload, and only then.
    first_grant = next(i for i, e in enumerate(lines) if e["decision"] == "grant")
    # By uid: names stay in the gallery unless [privacy] show_names (tests/sync/test_private_names.py).
    uid = json.loads(facegate("gallery", "list", "--data-dir", str(data), "--json").stdout)[0]["uid"]
    assert lines[first_grant]["person_uid"] == uid and "person" not in lines[first_grant]
    assert all(e["decision"] == "unknown" for e in lines[:first_grant])
    assert {e["camera"] for e in lines} == {"cam0"}
    # The human-readable line per decision goes to stdout when events go to a file.
    assert "grant" in out and uid in out and "Miranda" not in out and "Miranda" not in events.read_text()
    # Every decision, the reload and the start/stop are in the signed audit journal, which
    # names the person by uid only.
    assert facegate("audit", "verify", "--data-dir", str(data)).returncode == 0
    tail = facegate("audit", "tail", "--data-dir", str(data), "-n", "500", "--json").stdout
    records = [json.loads(line) for line in tail.splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("decision") == len(lines) and "config_reload" in kinds
    assert kinds.index("start") < kinds.index("decision") and kinds[-1] == "stop"
    granted_records = [r["body"] for r in records if r["kind"] == "decision" and r["body"]["decision"] == "grant"]
    assert granted_records and all(b["person_uid"] for b in granted_records)
    assert "Miranda" not in tail


def audit_kinds(data: Path) -> list[str]:
    tail = facegate("audit", "tail", "--data-dir", str(data), "-n", "50", "--json").stdout
    return [json.loads(line)["kind"] for line in tail.splitlines()]


def test_run_without_a_source_or_gallery_says_what_is_missing(model_store, tmp_path: Path) -> None:
    proc = facegate("run", "--data-dir", str(tmp_path / "none"), "--source", str(CLIP))
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert facegate("keys", "init", "--data-dir", str(tmp_path / "d")).returncode == 0
    proc = facegate("run", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2 and "no camera" in proc.stderr


def test_events_to_stdout_are_json_lines_only(model_store, tmp_path: Path) -> None:
    assert facegate("keys", "init", "--data-dir", str(tmp_path / "d")).returncode == 0
    proc = facegate("--config", no_liveness(tmp_path), "run", "--data-dir", str(tmp_path / "d"), "--source", str(CLIP), "--events", "-", "--max-seconds", "60")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(events) >= 3 and {e["decision"] for e in events} == {"unknown"}
    assert len({e["track_id"] for e in events}) == len(events)
