"""The Prometheus / health endpoint of a real `facegate run`, scraped over real HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge.audit.journal import AuditLog
from edge.service.metrics import outbox_depth
from sync.outbox import Outbox
from tests.service.test_systemd import _drain, _fill_fifo
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def test_metrics_and_health_of_a_running_daemon(model_store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    enrolled = subprocess.run([sys.executable, "-m", "edge.cli.main", "gallery", "enroll", "--data-dir", str(data), "--person", "Lin Manuel Miranda", str(LMM)],
                              cwd=REPO, capture_output=True, text=True, timeout=180)
    assert enrolled.returncode == 0, enrolled.stderr
    config = tmp_path / "config.toml"
    # port 0: the OS picks a free one and the daemon logs it; stall_s small so a wedge shows fast.
    config.write_text("[liveness]\nenabled = false\n[metrics]\nport = 0\nstall_s = 1.0\n")
    events = tmp_path / "events.fifo"
    reader = _fill_fifo(events)  # the first decision's write blocks the loop (see test_service.py)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(data),
         "--source", str(CLIP), "--realtime", "--events", str(events)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    stop_draining, drained = threading.Event(), bytearray()
    try:
        assert wait_for(lambda: any("metrics on http://" in line for line in err_lines), 120), "".join(err_lines)
        base = re.search(r"(http://[\d.]+:\d+)/metrics", "".join(err_lines)).group(1)

        # Wedged: the loop stopped turning, so the process is neither healthy nor ready.
        assert wait_for(lambda: get(base + "/healthz")[0] == 503, 60), get(base + "/healthz")
        code, body = get(base + "/readyz")
        assert code == 503 and json.loads(body)["status"] == "stalled"
        assert json.loads(get(base + "/healthz")[1])["loop_tick_age_s"] >= 1.0

        threading.Thread(target=_drain, args=(reader, stop_draining, drained), daemon=True).start()
        assert wait_for(lambda: get(base + "/healthz")[0] == 200 and get(base + "/readyz")[0] == 200, 30)
        assert json.loads(get(base + "/readyz")[1])["status"] == "ready"

        def scraped() -> dict:
            code, text = get(base + "/metrics")
            assert code == 200
            return samples(text)

        assert wait_for(lambda: (value(scraped(), "facegate_decisions_total", camera="cam0", decision="grant") or 0) >= 1, 60)
        m = scraped()
        assert get(base + "/nothing")[0] == 404
    finally:
        stop_draining.set()
        proc.wait(timeout=120)
        proc.kill()
        os.close(reader)
    assert proc.returncode == 0, "".join(err_lines)

    assert value(m, "facegate_frames_total", camera="cam0") > 0
    assert value(m, "facegate_fps", camera="cam0") > 0
    # per-stage latency histograms: every stage of the frame path reported
    for stage in ("detect", "landmarks", "align", "embed", "track", "match"):
        assert value(m, "facegate_stage_duration_seconds_count", stage=stage) > 0, stage
    assert value(m, "facegate_frame_duration_seconds_count", camera="cam0") > 0
    # decisions by outcome, every outcome present from the start (rate() needs the zero)
    for outcome in ("grant", "deny", "unknown", "spoof"):
        assert value(m, "facegate_decisions_total", camera="cam0", decision=outcome) is not None
    assert value(m, "facegate_decision_latency_seconds_count", decision="grant") >= 1
    assert value(m, "facegate_liveness_rejects_total", camera="cam0") == 0
    # capture-side drops, read from the capture thread's counters at scrape time
    assert value(m, "facegate_dropped_frames_total", camera="cam0", reason="stale") is not None
    assert value(m, "facegate_gallery_persons") == 1
    assert value(m, "facegate_gallery_version") == 0
    assert value(m, "facegate_ready") == 1
    info = {dict(labels)["role"]: dict(labels) for (name, labels) in m if name == "facegate_model_info"}
    assert info["embedder"]["model"].startswith("edgeface_xxs") and len(info["embedder"]["version"]) > 0
    assert "detector" in info and "landmarks" in info
    assert any(name == "facegate_build_info" for name, _ in m)
    # Sync is off in this config: no outbox gauge pretending to be zero.
    assert not any(name == "facegate_sync_outbox_depth" for name, _ in m)
    assert b'"decision": "grant"' in bytes(drained)


def test_outbox_depth_counts_rows_and_journal_records_not_yet_copied(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        for i in range(3):
            log.append("decision", {"track_id": i, "decision": "unknown"})
        assert outbox_depth(tmp_path) is None  # sync never ran here
        with Outbox.open(tmp_path) as outbox:
            assert outbox_depth(tmp_path) == 3  # all three still in the journal only
            outbox.feed_audit(log, lambda _r: None, limit=2)
            assert outbox_depth(tmp_path) == 3  # two copied, one not yet
            outbox.ack_audit(2)
            assert outbox_depth(tmp_path) == 1
            outbox.feed_audit(log, lambda _r: None)
            outbox.ack_audit(3)
            assert outbox_depth(tmp_path) == 0


def test_taken_port_is_logged_and_the_daemon_goes_on(tmp_path: Path, caplog) -> None:
    import socket

    from edge.config import Config, MetricsConfig
    from edge.service.metrics import MetricsObserver

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = Config(metrics=MetricsConfig(port=taken.getsockname()[1]))
        observer = MetricsObserver.serve(cfg)
    assert observer.server is None
    assert "running without /metrics" in caplog.text
