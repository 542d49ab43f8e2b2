"""The whole video runtime on one video: throughput, per-stage cost, decision latency. One JSON object.

    .venv/bin/python bench/pipeline.py --source VIDEO [--realtime] [--detector short|full]
        [--threads N] [--liveness on|off] [--max-face-wait-ms MS] [--enroll DIR]

Runs the same Pipeline as `facegate run` in this process (one inference thread plus one
capture thread), against an encrypted gallery in a temporary folder: empty, or enrolled from
`--enroll DIR/<Name>/*.jpg`. Without `--realtime` the file plays as fast as possible and `fps`
is the processing rate; with it the file plays at its own rate, frames the pipeline cannot keep
up with are dropped (`dropped_stale`), and `decision_latency_ms_*` is the time from the capture
of a track's first frame to its decision, as a person at the door would wait;
`usable_latency_ms_*` counts from the track's first frame that passed the quality gate (the
part of the wait the system, not the face, is responsible for; `tracks_never_usable` had none);
`face_latency_ms_*` counts from the first frame in which FaceMesh confirmed a face (a face is
visible, though maybe turned or blurred; `tracks_without_face` never showed one: backs of heads).
Stage figures are the mean ms per call: `detect` per frame, `landmarks`/`align`/`quality`/
`embed` per described face, `track` per frame, `match` per decision (fusion, identify, vote,
access), `liveness` per frame (cheap per-frame cues; the CNN runs at decision time, in `match`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig, Config, load_config
from edge.events import DecisionEvent
from edge.gallery.enroll import enroll_photos
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.gallery.thresholds import threshold_policy
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.liveness.checker import load_liveness
from edge.perception.photos import person_folders
from edge.video.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, nargs="+", help="one or more files, played in turn against one gallery")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--realtime", action="store_true")
    ap.add_argument("--detector", choices=("short", "full"), default=None)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads per model ([models] threads)")
    ap.add_argument("--liveness", choices=("on", "off"), default=None)
    ap.add_argument("--max-face-wait-ms", type=float, default=None, help="[decide] max_face_wait_ms (default: the config's)")
    ap.add_argument("--enroll", type=Path, default=None, help="DIR/<Name>/*.jpg to enroll first (every photo)")
    ap.add_argument(
        "--enroll-frames", default=None, metavar="NAME=START:STOP:STEP",
        help="also enroll NAME from those frames of the first --source (its largest gate-passing face each)",
    )
    ap.add_argument(
        "--play-from", type=int, default=0, metavar="FRAME",
        help="play each source from this frame on (a copy in a temporary file): frames used by "
        "--enroll-frames are then never the frames decided on",
    )
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()

    cfg: Config = load_config(args.config)
    if args.detector:
        cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, model=args.detector))
    if args.threads:
        cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, threads=args.threads))
    if args.max_face_wait_ms is not None:
        cfg = dataclasses.replace(cfg, decide=dataclasses.replace(cfg.decide, max_face_wait_ms=args.max_face_wait_ms))
    if args.liveness:
        cfg = dataclasses.replace(cfg, liveness=dataclasses.replace(cfg.liveness, enabled=args.liveness == "on"))
    perception = Perception(cfg)
    liveness = load_liveness(cfg, perception.store)
    # No warm-up here: Pipeline.run warms every model and clears the timings before it starts.
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery.open(
            Path(tmp), os.urandom(32), embedder_model_name(cfg), embedder_spec(cfg.embed.model).dim,
            threshold_policy(cfg, perception.store), create=True,
        )
        if args.enroll:
            for name, photos in person_folders(args.enroll):
                enroll_photos(gallery, perception, PersonProfile(name=name), photos)
        if args.enroll_frames:
            _enroll_frames(gallery, perception, args.source[0], args.enroll_frames)
        sources = [_from_frame(s, args.play_from, Path(tmp)) if args.play_from else s for s in args.source]
        runs = [_play(cfg, gallery, perception, liveness, source, args.realtime, args.max_seconds) for source in sources]
        gallery.close()
    out = runs[0] if len(runs) == 1 else {
        "sources": runs,
        "decisions": {k: sum(r["decisions"].get(k, 0) for r in runs) for k in ("grant", "deny", "unknown", "spoof")},
    }
    json.dump(out, sys.stdout)
    print()


def _from_frame(source: str, first: int, tmp: Path) -> str:
    """A lossless-enough copy (MJPEG, quality 95) of `source` from frame `first` on, same rate."""
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out_path = tmp / f"{Path(source).stem}-from{first}.avi"
    writer = None
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if n >= first:
            if writer is None:
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (bgr.shape[1], bgr.shape[0]))
                writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
            writer.write(bgr)
        n += 1
    cap.release()
    if writer is None:
        raise SystemExit(f"--play-from {first}: {source} has only {n} frames")
    writer.release()
    return str(out_path)


def _enroll_frames(gallery: Gallery, perception: Perception, source: str, spec: str) -> None:
    name, _, span = spec.partition("=")
    start, stop, step = (int(v) for v in span.split(":"))
    cap = cv2.VideoCapture(source)
    embeddings, qualities, n = [], [], 0
    while n < stop:
        ok, bgr = cap.read()
        if not ok:
            break
        if n >= start and (n - start) % step == 0:
            faces = [f for f in perception.faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if f.quality.ok and f.embedding is not None]
            if faces:
                embeddings.append(faces[0].embedding)
                qualities.append(faces[0].quality.score)
        n += 1
    cap.release()
    if not embeddings:
        raise SystemExit(f"--enroll-frames: no gate-passing face in frames {span} of {source}")
    gallery.enroll(PersonProfile(name=name), embeddings, qualities)


def _play(cfg: Config, gallery: Gallery, perception: Perception, liveness, source: str, realtime: bool, max_seconds: float) -> dict:  # noqa: ANN001
    cap = cv2.VideoCapture(source)
    width, height, src_fps = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    decisions: list[DecisionEvent] = []
    pipeline = Pipeline(cfg, gallery, [CameraConfig(name="bench", source=source)], realtime=realtime, perception=perception, liveness=liveness)
    pipeline.on_decision = decisions.append
    cpu0 = time.process_time()
    summary = pipeline.run(max_seconds).to_dict()
    cpu = time.process_time() - cpu0
    cam = summary["cameras"]["bench"]
    described = [d.frames_used for d in decisions]
    out = {
        "source": Path(source).name,
        "resolution": f"{width}x{height}",
        "source_fps": round(src_fps, 2),
        "realtime": realtime,
        "detector": cfg.detect.model,
        "liveness_enabled": liveness is not None,
        "fps": summary["fps"],
        "frames": summary["frames"],
        "dropped_stale": cam["dropped_stale"],
        "faces": summary["faces"],
        "decisions": summary["decisions"],
        "tracks_decided": len(decisions),
        "frames_used_mean": round(float(np.mean(described)), 2) if described else None,
        **{k: round(v, 3) for k, v in summary["stages_ms"].items()},
        "decision_latency_ms_p50": summary["decision_latency_ms_p50"],
        "decision_latency_ms_p95": summary["decision_latency_ms_p95"],
        "decision_latency_ms_max": round(max(d.latency_ms for d in decisions), 1) if decisions else None,
        "usable_latency_ms_p50": summary["usable_latency_ms_p50"],
        "usable_latency_ms_p95": summary["usable_latency_ms_p95"],
        "tracks_never_usable": sum(d.usable_latency_ms is None for d in decisions),
        "face_latency_ms_p50": summary["face_latency_ms_p50"],
        "face_latency_ms_p95": summary["face_latency_ms_p95"],
        "tracks_without_face": sum(d.face_latency_ms is None for d in decisions),
        "max_face_wait_ms": cfg.decide.max_face_wait_ms,
        "cpu_threads": len(os.sched_getaffinity(0)),
        "inference_threads": cfg.models.threads,
        "cpu_seconds": round(cpu, 2),
        "cpu_util": round(cpu / summary["seconds"], 2) if summary["seconds"] else None,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    out["gallery_persons"], out["threshold"] = len(gallery), round(gallery.threshold, 4)
    out["granted"] = sorted({d.person for d in decisions if d.decision == "grant"})
    out["grant_usable_latency_ms"] = [round(d.usable_latency_ms, 1) for d in decisions if d.decision == "grant" and d.usable_latency_ms is not None]
    return out


if __name__ == "__main__":
    main()
