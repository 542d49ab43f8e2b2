"""The ZeroMQ API on a running daemon: the kiosk flow on real video (identify → unknown
request_id → enroll → the new person is recognised, audited), typed errors, and that only a
grant ever reaches the relay (a spoof, deny or unknown never does)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from bench.harness.fake_gpio import FakeChip
from edge.audit.journal import AuditLog
from edge.config import CameraConfig, Config, DoorConfig, MetricsConfig, ZmqConfig
from edge.daemon import Daemon, RunOptions
from edge.events import DecisionEvent
from edge.gallery.loader import open_gallery
from edge.outputs.doors import DoorOutputs
from edge.outputs.wiegand import decode
from edge.perception.faces import Perception
from edge.video.observer import Observer
from tests.support.faces import video_frames

RELAY, D0, D1, CONTACT = 17, 5, 6, 27


def endpoints(tmp: Path) -> ZmqConfig:
    return ZmqConfig(events=f"ipc://{tmp}/events", control=f"ipc://{tmp}/control", unknown_ttl_s=30.0, enroll_groups=("visitors",))


class Client:
    """What a kiosk does, with nothing but pyzmq and JSON."""

    def __init__(self, zcfg: ZmqConfig) -> None:
        self.ctx = zmq.Context()
        self.req = self.ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(zcfg.control)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(zcfg.events)
        self.events: list[dict] = []

    def call(self, **request: object) -> dict:
        self.req.send(json.dumps({"v": 1, **request}).encode())
        assert self.req.poll(20000), f"no reply to {request}"
        return json.loads(self.req.recv())

    def raw(self, data: bytes) -> dict:
        self.req.send(data)
        assert self.req.poll(20000)
        return json.loads(self.req.recv())

    def wait_event(self, predicate, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sub.poll(100):
                topic, body = self.sub.recv_multipart()
                event = json.loads(body)
                assert event["type"] == topic.decode() and event["v"] == 1
                self.events.append(event)
            for event in self.events:
                if predicate(event):
                    return event
        return None

    def close(self) -> None:
        self.req.close()
        self.sub.close()
        self.ctx.term()


def test_kiosk_identify_unknown_enroll_then_recognised(shared_data: Path, perception: Perception, tmp_path: Path) -> None:
    video = shared_data / "videos" / "apfol_real2.webm"
    # The visitor, then an empty scene long enough to end the track, then the visitor again.
    folder = tmp_path / "kiosk"
    folder.mkdir()
    first, second = video_frames(video, 100, 150), video_frames(video, 160, 214)
    blank = [np.zeros_like(first[0])] * 12
    for i, bgr in enumerate(first + blank + second):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), bgr)

    cfg = perception.cfg
    zcfg = endpoints(tmp_path)
    door = DoorConfig(name="kiosk-gate", camera="kiosk", relay_line=RELAY, liveness_required=False,
                      wiegand_d0_line=D0, wiegand_d1_line=D1, wiegand_facility=42)
    run_cfg = dataclasses.replace(cfg, door=(door,), zmq=zcfg, metrics=MetricsConfig(enabled=False))
    data_dir = tmp_path / "g"
    open_gallery(data_dir, run_cfg, perception.store, create=True).close()
    chip = FakeChip()
    decisions = Decisions()
    started = threading.Event()
    holder: dict[str, Daemon] = {}

    def run() -> None:
        # The gallery's SQLite connection belongs to the thread that runs the daemon.
        camera = CameraConfig(name="kiosk", source=str(folder), fps=8.0)
        options = RunOptions([camera], data_dir, realtime=True, observers=(decisions,), gpio=chip)
        daemon = holder["d"] = Daemon(run_cfg, options, perception).start()
        started.set()
        daemon.run(max_seconds=120)

    runner = threading.Thread(target=run, daemon=True)
    client = Client(zcfg)
    runner.start()
    assert started.wait(60)
    pipeline = holder["d"].pipeline
    try:
        first_answer = client.call(op="identify", camera="kiosk", wait_ms=8000)
        assert first_answer["ok"] and first_answer["status"] == "unknown", first_answer
        request_id = first_answer["request_id"]
        assert client.call(op="identify", camera="hall")["error"]["code"] == "unknown_camera"
        refused = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor")
        assert refused["error"]["code"] == "consent_required"
        assert client.call(op="enroll", request_id="feedbeef", name="X", consent=True)["error"]["code"] == "unknown_request"
        # A kiosk enrolls into [zmq] enroll_groups only, and for at most enroll_max_valid_days.
        staff = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor", consent=True, groups=["visitors", "staff"])
        assert staff["error"]["code"] == "group_not_allowed" and "staff" in staff["error"]["message"]
        decades = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor", consent=True, valid_until=int(time.time()) + 30 * 365 * 86400)
        assert decades["error"]["code"] == "validity_too_long"
        # Nor can it promise a retention its validity would not keep, or a nonsense one.
        forever = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor", consent=True, retention_days=100 * 365)
        assert forever["error"]["code"] == "retention_too_long"
        for bad in (0, -5, True):
            nonsense = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor", consent=True, retention_days=bad)
            assert nonsense["error"]["code"] == "bad_request", (bad, nonsense)
        enrolled = client.call(op="enroll", request_id=request_id, name="Kiosk Visitor", consent=True,
                               consent_text="I agree to be recognised at this kiosk", groups=["visitors"])
        assert enrolled["ok"] and enrolled["person"] == "Kiosk Visitor" and enrolled["templates"] >= 1, enrolled
        again = client.call(op="identify", camera="kiosk")
        assert again["status"] == "known" and again["person"] == "Kiosk Visitor"
        # The same face walking up again is a new track, recognised from the gallery alone.
        granted = client.wait_event(lambda e: e["type"] == "decision" and e["decision"] == "grant", timeout=60)
        assert granted is not None, [e for e in client.events if e["type"] == "decision"]
        # Events carry the uid; the name stays in the gallery ([privacy] show_names is off).
        assert granted["person_uid"] == enrolled["uid"] and "person" not in granted and granted["door"] == "kiosk-gate"
        assert granted["track_id"] != first_answer["track_id"]
        unlocked = client.wait_event(lambda e: e["type"] == "door" and e["event"] == "unlocked", timeout=10)
        assert unlocked is not None and unlocked["person_uid"] == enrolled["uid"] and "person" not in unlocked
        status = client.call(op="status")
        assert status["ok"] and status["people"] == 1 and status["doors"]["kiosk-gate"]["camera"] == "kiosk"
        assert client.raw(b"{not json")["error"]["code"] == "bad_request"
        assert client.call(op="dance")["error"]["code"] == "unknown_op"
    finally:
        pipeline.stop_event.set()
        runner.join(30)
        client.close()
    lines = chip.opened[0]
    # The relay went on once, for the recognised visitor, and never while they were unknown.
    assert [v for _, n, v in lines.log if n == RELAY][:1] == [True]
    unknown_at = next(d for d in decisions.events if d.decision == "unknown").ts
    assert all(d.decision != "grant" or d.ts > unknown_at for d in decisions.events)
    assert lines.log[-1][1:] == (RELAY, False)  # stopped: strike back to locked
    # The grant also went out as a Wiegand card read: facility 42, card = the new person's gallery id (1).
    pulses = [1 if line == D1 else 0 for _, line, active in lines.log if active and line in (D0, D1)]
    assert decode(pulses) == (42, 1)
    # Audited before it was acted on: the enrollment and every decision, by uid.
    with AuditLog.open(data_dir) as journal:
        records = journal.since(0, 100000)
    kinds = [r.kind for r in records]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("decision") == len(decisions.events)
    (enroll,) = [r.body for r in records if r.kind == "enroll"]
    assert enroll["person_uid"] == enrolled["uid"] and enroll["by"] == f"kiosk:{request_id}"
    # An unknown face's decision record keeps its evidence, never the face: no embedding, no image.
    unknown_records = [r.body for r in records if r.kind == "decision" and r.body["decision"] == "unknown"]
    assert unknown_records and all(b["person_uid"] is None for b in unknown_records)
    for body in unknown_records:
        assert set(body) == UNKNOWN_AUDIT_FIELDS, sorted(body)
        keys, lists, strings = _shape(body)
        face_data = ("embedding", "image", "probe", "template", "chip", "pixel", "jpeg", "png", "vector", "crop")
        assert not {k for k in keys if any(w in k.lower() for w in face_data)}, keys  # ("embedder" names a model)
        assert max(lists, default=0) <= 16, f"a list of {max(lists)} values in an unknown face's audit record"
        assert max(strings, default=0) <= 200, f"a string of {max(strings)} characters in an unknown face's audit record"
    grant_records = [r.body for r in records if r.kind == "decision" and r.body["decision"] == "grant"]
    assert grant_records and all(b["person_uid"] == enrolled["uid"] and b["door"] == "kiosk-gate" for b in grant_records)
    # The door's own events are audit records too, linked to the grant they follow, by uid only.
    unlocked = [r.body for r in records if r.kind == "door_event" and r.body["event"] == "unlocked"]
    assert unlocked and {b["decision_event_id"] for b in unlocked} <= {b["event_id"] for b in grant_records}
    assert all(b["person_uid"] == enrolled["uid"] and "person" not in b for b in unlocked)


UNKNOWN_AUDIT_FIELDS = {
    "event_id", "camera", "track_id", "decision", "reason", "score", "threshold", "target_fmr", "stranger_accept_rate", "gallery_size",
    "door", "frames_used", "latency_ms", "models", "liveness", "credential", "person_uid", "captured_at",
}


def _shape(value: object, keys: set[str] | None = None, lists: list[int] | None = None, strings: list[int] | None = None) -> tuple[set[str], list[int], list[int]]:
    """Every key, list length and string length anywhere in a JSON value."""
    keys, lists, strings = set() if keys is None else keys, [] if lists is None else lists, [] if strings is None else strings
    if isinstance(value, dict):
        keys.update(value)
        for v in value.values():
            _shape(v, keys, lists, strings)
    elif isinstance(value, list):
        lists.append(len(value))
        for v in value:
            _shape(v, keys, lists, strings)
    elif isinstance(value, str):
        strings.append(len(value))
    return keys, lists, strings


class Decisions(Observer):
    name = "test"

    def __init__(self) -> None:
        self.events: list[DecisionEvent] = []

    def on_decision(self, event: DecisionEvent) -> None:
        self.events.append(event)


def _decision(kind: str, person: str | None, reason: str) -> DecisionEvent:
    return DecisionEvent(ts=time.time(), camera="door", track_id=7, decision=kind, reason=reason, person=person,
                         person_id=1 if person else None, person_uid="ab" * 16 if person else None, score=0.9,
                         threshold=0.3, target_fmr=1e-4, door="front", frames_used=3, quality=0.9, latency_ms=100.0,
                         usable_latency_ms=80.0, first_seen=time.time(), source_t=0.0, box=(0.0, 0.0, 10.0, 10.0))


@pytest.mark.parametrize(("kind", "person", "reason"), [
    ("spoof", None, "liveness"), ("deny", "Ann", "passback"), ("unknown", None, "no_match"),
])
def test_only_a_grant_reaches_the_relay(kind: str, person: str | None, reason: str) -> None:
    door = DoorConfig(name="front", camera="door", relay_line=RELAY, liveness_required=True, unhealthy_after_s=60)
    chip = FakeChip()
    ctx = zmq.Context()
    outputs = DoorOutputs(Config(door=(door,)), ctx, open_lines=chip)
    outputs.thread.start()
    try:
        lines = chip.opened[0]
        outputs.on_decision(_decision(kind, person, reason))
        assert lines.wait_for(RELAY, True, timeout=1.0) is None  # nothing, however long we wait
        outputs.on_decision(_decision("grant", "Ann", "match"))
        assert lines.wait_for(RELAY, True, timeout=10.0) is not None
    finally:
        outputs.close()
        ctx.term()


def test_contact_alarms_and_fail_safe_reach_the_relay_and_the_event_socket(tmp_path: Path) -> None:
    zcfg = ZmqConfig(events=f"ipc://{tmp_path}/events")
    door = DoorConfig(name="side", camera="door", relay_line=RELAY, contact_line=CONTACT, fail="safe",
                      unhealthy_after_s=1.0, held_open_s=1.0)
    chip = FakeChip()
    ctx = zmq.Context()
    audited: list[tuple[str, dict]] = []
    outputs = DoorOutputs(Config(door=(door,), zmq=zcfg), ctx, open_lines=chip, audit=lambda kind, body: audited.append((kind, body)))
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"door")
    sub.connect(zcfg.events)
    time.sleep(0.3)
    seen: list[str] = []

    def wait_event(name: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and name not in seen:
            if sub.poll(100):
                seen.append(json.loads(sub.recv_multipart()[1])["event"])
        return name in seen

    lines = chip.opened[0]
    outputs.last_frame["door"] = time.monotonic() + 3600  # frames keep coming, for now
    outputs.thread.start()
    try:
        lines.drive_input(CONTACT, True)  # someone pushes the locked door open
        assert wait_event("opened") and wait_event("forced") and wait_event("held_open")
        assert [v for _, n, v in lines.log if n == RELAY] == []  # an alarm never unlocks
        lines.drive_input(CONTACT, False)
        assert wait_event("closed")
        outputs.last_frame["door"] = time.monotonic() - 5  # the camera went silent
        assert wait_event("unhealthy") and wait_event("unlocked")
        assert lines.wait_for(RELAY, True, timeout=5) is not None  # fail-safe: released
        outputs.last_frame["door"] = time.monotonic() + 3600
        assert wait_event("healthy") and wait_event("locked")
        assert lines.log[-1][1:] == (RELAY, False)
        # Every alarm is in the tamper-evident journal, not only on the socket.
        events = [(body["event"], body.get("reason")) for kind, body in audited if kind == "door_event"]
        for wanted in (("forced", None), ("held_open", None), ("unhealthy", None), ("unlocked", "fail_safe"), ("healthy", None)):
            assert wanted in events, (wanted, events)
    finally:
        outputs.close()
        sub.close(0)
        ctx.term()
