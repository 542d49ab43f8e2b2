"""Door latency on real video: first frame showing the face → relay on, and → ZeroMQ event. One JSON object.

    .venv/bin/python bench/door.py [--video V] [--runs N] [--liveness on|off] [--config PATH]

The person in the clip is enrolled from its first frames (0-70, every 7th, as in
tests/video/test_pipeline.py), with the demo gallery as distractors, into an encrypted gallery in a
temporary folder. Each run plays a later stretch of the clip (a different starting frame per
run, from frame 100 on) at its own frame rate (`realtime`, so capture times are real) through
the same Pipeline + DoorOutputs as `facegate run`, with a door on the camera whose relay line is
an in-memory GPIO chip (this machine has no GPIO hardware or gpio-sim) and a ZeroMQ PUB socket a
subscriber in this process listens to. Per run:
- `relay_ms`: capture of the track's first frame → the relay line set active;
- `zmq_ms`: the same start → the decision event received by the subscriber;
- `decision_ms`: → the decision itself (the pipeline's own latency_ms); `decision_to_relay_ms`
  is what the door outputs add on top.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/harness is not an installed package

from bench.harness.fake_gpio import FakeChip  # noqa: E402 - after the path
from edge.config import CameraConfig, Config, DoorConfig, ZmqConfig, load_config
from edge.gallery.enroll import enroll_photos
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.gallery.thresholds import match_threshold
from edge.outputs.doors import DoorOutputs
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.liveness.checker import load_liveness
from edge.perception.photos import person_folders
from edge.video.pipeline import Pipeline

RELAY = 17
PERSON = "Webcam Man"
RUN_FRAMES = 60


def frames(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(bgr)
    cap.release()
    return out


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def one_run(cfg: Config, gallery: Gallery, perception: Perception, liveness: object, folder: Path, fps: float, tmp: Path) -> dict:
    chip = FakeChip()
    events = f"ipc://{tmp}/events"
    door = DoorConfig(name="bench", camera="door", relay_line=RELAY, liveness_required=liveness is not None)
    run_cfg = dataclasses.replace(cfg, door=(door,), zmq=ZmqConfig(events=events))
    pipeline = Pipeline(run_cfg, gallery, [CameraConfig(name="door", source=str(folder), fps=fps)],
                        realtime=True, perception=perception, liveness=liveness)
    ctx = zmq.Context()
    outputs = DoorOutputs(run_cfg, ctx, open_lines=chip)  # binds the PUB socket
    pipeline.observers.add(outputs)
    got: dict[str, object] = {}
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"decision")
    sub.connect(events)
    time.sleep(0.3)  # a door controller is subscribed long before anyone walks up

    def listen() -> None:
        while not pipeline.stop_event.is_set():
            if sub.poll(50):
                _, body = sub.recv_multipart()
                received = time.time()
                event = json.loads(body)
                got.setdefault("first", (event, received))
                if event["decision"] == "grant":
                    got["grant"] = (event, received)
                    time.sleep(0.2)  # let the outputs thread set the relay, then end the run
                    pipeline.stop_event.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    offset = time.time() - time.monotonic()  # the chip logs monotonic times; events carry wall-clock ones
    pipeline.run(max_seconds=30)
    pipeline.stop_event.set()
    listener.join(5)
    outputs.close()
    sub.close(0)
    ctx.term()
    event, received = got.get("grant") or got.get("first") or ({}, None)
    out = {"decision": event.get("decision"), "reason": event.get("reason"), "liveness": event.get("liveness")}
    if event:
        start = float(event["first_seen"])
        relay_on = [t for t, line, active in chip.opened[0].log if line == RELAY and active]
        out.update(decision_ms=event["latency_ms"], zmq_ms=round((received - start) * 1000.0, 1),
                   relay_ms=round((relay_on[0] + offset - start) * 1000.0, 1) if relay_on else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared/data/videos/apfol_real2.webm")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--liveness", choices=("on", "off"), default="on")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args()

    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, liveness=dataclasses.replace(cfg.liveness, enabled=args.liveness == "on"))
    perception = Perception(cfg)
    liveness = load_liveness(cfg, perception.store)
    clip = frames(args.video)
    fps = cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or 30.0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gallery = Gallery.open(tmp / "g", os.urandom(32), embedder_model_name(cfg), embedder_spec(cfg.embed.model).dim,
                               match_threshold(cfg, perception.store), create=True)
        embeddings, qualities = [], []
        for bgr in clip[0:70:7]:
            faces = perception.faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if faces and faces[0].quality.ok:
                embeddings.append(faces[0].embedding)
                qualities.append(faces[0].quality.score)
        gallery.enroll(PersonProfile(name=PERSON), embeddings, qualities)
        for name, photos in person_folders(REPO / "assets/demo/gallery"):
            enroll_photos(gallery, perception, PersonProfile(name=name), photos)
        runs = []
        starts = np.linspace(100, max(100, len(clip) - RUN_FRAMES), args.runs).astype(int)
        for i, start in enumerate(starts):
            folder = tmp / f"run{i}"
            folder.mkdir()
            for j, bgr in enumerate(clip[start:start + RUN_FRAMES]):
                cv2.imwrite(str(folder / f"{j:04d}.png"), bgr)
            runs.append({"start_frame": int(start), **one_run(cfg, gallery, perception, liveness, folder, fps, tmp)})
        gallery.close()
    relay = [r["relay_ms"] for r in runs if r.get("relay_ms") is not None]
    zmq_ms = [r["zmq_ms"] for r in runs if r.get("decision") == "grant"]
    decision = [r["decision_ms"] for r in runs if r.get("decision") == "grant"]
    # What the outputs add after the decision (queue, thread hand-over, relay / PUB).
    added = [r["relay_ms"] - r["decision_ms"] for r in runs if r.get("relay_ms") is not None]
    print(json.dumps({
        "video": args.video.name, "fps": round(fps, 2), "runs": len(runs), "grants": len(relay),
        "liveness": args.liveness, "embedder": embedder_model_name(cfg),
        "relay_ms_p50": pct(relay, 50), "relay_ms_p95": pct(relay, 95),
        "relay_ms_min": min(relay, default=None), "relay_ms_max": max(relay, default=None),
        "zmq_ms_p50": pct(zmq_ms, 50), "zmq_ms_p95": pct(zmq_ms, 95),
        "decision_ms_p50": pct(decision, 50), "decision_ms_p95": pct(decision, 95),
        "decision_to_relay_ms_p50": pct(added, 50), "decision_to_relay_ms_p95": pct(added, 95),
        "per_run": runs,
    }))


if __name__ == "__main__":
    main()
