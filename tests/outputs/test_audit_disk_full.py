"""A door whose audit journal cannot be written (issue 19), on a real full file system (a small
tmpfs, filled during the run): no crash; a door with `require_audit` (the default) stays locked
for every grant that cannot be journalled and raises `audit_unavailable`; `require_audit = false`
opens anyway, alarmed; /metrics shows it; once space returns, the next grant opens again."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import zmq

from bench.harness.fake_gpio import FakeChip
from edge.audit.journal import AuditLog
from edge.config import CameraConfig, Config, DoorConfig, LivenessConfig, MetricsConfig, ZmqConfig
from edge.daemon import Daemon, RunOptions
from edge.errors import AuditError, GalleryError
from edge.events import DecisionEvent
from edge.gallery.loader import open_gallery
from edge.outputs.doors import DoorOutputs
from edge.perception.faces import Perception
from edge.service.metrics import MetricsObserver
from edge.video.observer import Observer, Observers
from tests.support.faces import WEBCAM_MAN, enroll_from_video, video_frames, write_stills
from tests.support.tmpfs import SmallDisk, small_tmpfs

FRONT, SIDE = 17, 18  # relay lines


@pytest.fixture
def disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk", "8m") as d:
        yield d


def _grant(camera: str) -> DecisionEvent:
    return DecisionEvent(ts=time.time(), camera=camera, track_id=1, decision="grant", reason="match", person="Ann", person_id=1,
                         person_uid="ab" * 16, score=0.9, threshold=0.3, target_fmr=1e-4, door=camera, frames_used=3, quality=0.9,
                         latency_ms=100.0, usable_latency_ms=80.0, first_seen=time.time(), source_t=0.0, box=(0.0, 0.0, 10.0, 10.0))


def _audit_then_act(journal: AuditLog, observers: Observers, event: DecisionEvent) -> bool:
    """What the daemon does with every decision (edge/daemon.py `_decided`)."""
    try:
        journal.append("decision", event.audit_body())
    except AuditError:
        observers.decision(event, audited=False)
        return False
    observers.decision(event, audited=True)
    return True


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _events(outputs: DoorOutputs, camera: str) -> list[tuple[str, str | None]]:
    return [(e["event"], e.get("grant", e.get("reason"))) for e in outputs.doors[camera].last_events]


def test_a_full_disk_keeps_a_require_audit_door_locked_and_the_next_grant_after_space_returns_opens(disk: SmallDisk, tmp_path: Path) -> None:
    zcfg = ZmqConfig(events=f"ipc://{tmp_path}/events")
    doors = (DoorConfig(name="front", camera="front", relay_line=FRONT, open_time_s=0.2, unhealthy_after_s=3600),
             DoorConfig(name="side", camera="side", relay_line=SIDE, open_time_s=0.2, unhealthy_after_s=3600, require_audit=False))
    cfg = Config(door=doors, zmq=zcfg)
    journal = AuditLog.open(disk.root / "data")
    chip, ctx = FakeChip(), zmq.Context()
    outputs = DoorOutputs(cfg, ctx, open_lines=chip, audit=journal.append, audit_health=journal.health)
    metrics = MetricsObserver(cfg, audit_health=journal.health)
    observers = Observers()
    observers.add(outputs, metrics)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"door")
    sub.connect(zcfg.events)
    relay = lambda line: [active for lines in chip.opened for _, n, active in lines.log if n == line]  # noqa: E731
    sample = metrics.registry.get_sample_value
    outputs.thread.start()
    try:
        assert _audit_then_act(journal, observers, _grant("front"))
        assert relay(FRONT) == [True]  # driven on the decision's own thread
        assert _wait(lambda: relay(FRONT) == [True, False])  # relocked after open_time_s
        assert sample("facegate_audit_writable") == 1.0 and sample("facegate_door_grants_refused_total", {"door": "front", "reason": "audit_unavailable"}) == 0.0

        disk.fill()
        assert not _audit_then_act(journal, observers, _grant("front"))
        assert not _audit_then_act(journal, observers, _grant("front"))
        assert relay(FRONT) == [True, False]  # never released: no durable record, no unlock
        assert not _audit_then_act(journal, observers, _grant("side"))
        assert relay(SIDE) == [True]  # require_audit = false: opened anyway ...
        assert _wait(lambda: ("audit_unavailable", "opened") in _events(outputs, "side"))  # ... and alarmed
        assert _wait(lambda: _events(outputs, "front").count(("audit_unavailable", "refused")) == 2)
        assert sample("facegate_audit_writable") == 0.0 and sample("facegate_audit_write_failures_total") >= 3
        assert sample("facegate_door_grants_refused_total", {"door": "front", "reason": "audit_unavailable"}) == 2.0
        assert outputs.thread.is_alive()

        disk.free()
        assert _audit_then_act(journal, observers, _grant("front"))
        assert relay(FRONT) == [True, False, True]  # space is back: the next grant opens
        assert _wait(lambda: ("audit_restored", None) in _events(outputs, "front"))
        restored = [e for e in outputs.doors["front"].last_events if e["event"] == "audit_restored"]
        assert restored[0]["unaudited_grants"] == 2
        assert sample("facegate_audit_writable") == 1.0
        # The alarm went out on the event socket too, and the journal holds the restoration.
        seen = []
        while sub.poll(500):
            seen.append(json.loads(sub.recv_multipart()[1])["event"])
        assert "audit_unavailable" in seen and "audit_restored" in seen
        assert _wait(lambda: any(r.kind == "door_event" and r.body["event"] == "audit_restored" for r in journal.tail(20)))
        assert journal.verify().ok
    finally:
        outputs.close()
        sub.close(0)
        ctx.term()
        journal.close()


class FillsTheDisk(Observer):
    """Fills the data dir's file system once the daemon runs; frees it after the first grant, which
    therefore cannot be journalled, so the second grant finds space again."""

    name, acts = "fills-the-disk", False

    def __init__(self, disk: SmallDisk) -> None:
        self.disk, self.grants = disk, 0

    def on_start(self, pipeline: object) -> None:
        self.disk.fill()

    def on_decision(self, event: DecisionEvent) -> None:
        if event.decision == "grant":
            self.grants += 1
            if self.grants == 1:
                self.disk.free()


def test_a_daemon_on_a_full_disk_runs_on_refuses_the_unjournalled_grant_and_opens_for_the_next(
        disk: SmallDisk, shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    video = shared_data / "videos" / "apfol_real2.webm"
    cfg = dataclasses.replace(
        perception.cfg, liveness=LivenessConfig(enabled=False), metrics=MetricsConfig(enabled=False),
        door=(DoorConfig(name="lab", camera="door", relay_line=FRONT, liveness_required=False),),
    )
    data_dir = disk.root / "data"
    with open_gallery(data_dir, cfg, perception.store, create=True) as gallery:
        assert enroll_from_video(gallery, perception, WEBCAM_MAN, video, 0, 70, 7) >= 5
    # The man walks up, leaves (blank frames end his track), and comes back: two grants.
    frames = video_frames(video, 100, 214)
    blank = [frames[0] * 0] * 10
    camera = CameraConfig(name="door", source=str(write_stills(frames + blank + frames, tmp_path / "door")), fps=30.0)
    chip, filler = FakeChip(), FillsTheDisk(disk)
    daemon = Daemon(cfg, RunOptions([camera], data_dir, observers=(filler,), gpio=chip), perception).start()
    summary = daemon.run(max_seconds=300)  # no crash: the run ends at the end of the stills
    assert summary.frames == 2 * len(frames) + len(blank) and summary.decisions.get("grant") == 2
    relay = [active for _, line, active in chip.opened[0].log if line == FRONT]
    assert relay[:1] == [True] and relay.count(True) == 1  # the first grant never opened, the second did
    events = [e["event"] for e in daemon.doors.status()["lab"]["last_events"]]
    assert events.index("audit_unavailable") < events.index("audit_restored") < events.index("unlocked")
    assert daemon.pipeline.observers.errors["audit"] == 1
    with AuditLog.open(data_dir) as journal:
        records = journal.since(0, 10_000)
        assert [r.kind for r in records].count("decision") == 1  # only the grant that opened
        assert journal.verify().ok


def test_a_daemon_started_on_a_full_disk_says_to_free_space_not_to_restore_a_backup(disk: SmallDisk, model_store) -> None:
    data_dir = disk.root / "data"
    open_gallery(data_dir, Config(), model_store, create=True).close()
    AuditLog.open(data_dir).close()
    disk.fill()  # SQLite cannot even map its -shm now
    with pytest.raises(GalleryError, match=r"file system holding it is full \(0 KiB free\): free space there"):
        open_gallery(data_dir, Config(), model_store, create=False)
    with pytest.raises(AuditError, match="file system holding it is full"):
        AuditLog.open(data_dir)
    disk.free()
    with open_gallery(data_dir, Config(), model_store, create=False), AuditLog.open(data_dir) as journal:
        assert journal.verify().ok
