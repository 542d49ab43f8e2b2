"""Liveness cost per decided track, on one core; prints ONE JSON object.

Frames of the labelled videos in ../shared/data/videos go through the perception core once
(not timed); then tracks of `--track-frames` consecutive frames are replayed through
TrackLiveness: every `add()` and the final `result()` are timed, i.e. everything liveness adds
to a track's decision (context crops, landmark geometry, the CNN on the selected frames, pixel
cues, fusion). Runs pinned to one CPU with one ONNX Runtime thread.

    .venv/bin/python bench/liveness.py [--track-frames 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import Config, ModelsConfig
from edge.perception.faces import Face, Perception
from edge.perception.liveness.checker import WINDOW_FRAMES, Liveness

VIDEOS = REPO.parent / "shared" / "data" / "videos"
CLIPS = ("apfol_real2.webm", "apfol_fake2.webm")
# (model, precision, passive_frames, recheck_margin, [models] backend); the first is the
# default config ("auto" = the CNN on TFLite/XNNPACK when installed).
VARIANTS = (
    ("v1se", "fp32", 1, 0.4, "auto"),
    ("v1se", "fp32", 1, 0.4, "onnxruntime"),
    ("v1se", "fp32", 1, 0.0, "auto"),
    ("v1se", "int8", 1, 0.4, "onnxruntime"),
    ("v1se", "fp32", 2, 0.4, "auto"),
    ("both", "fp32", 1, 0.0, "auto"),
)
REFERENCE = "edgeface_xxs_int8"  # README's per-stage table has it: scales figures between machines


def frames_with_faces(perception: Perception, path: Path, limit: int) -> list[tuple[np.ndarray, Face]]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = perception.faces(rgb, embed=False)
        if faces:
            out.append((rgb, faces[0]))
    cap.release()
    return out


def per_track_ms(
    liveness: Liveness, frames: list[tuple[np.ndarray, Face]], n: int, repeats: int
) -> tuple[list[float], list[float]]:
    """(wall ms, CPU ms) per track. CPU time leaves out time the process waited for the core,
    which on a shared machine is most of the wall-time spread."""
    wall, cpu = [], []
    for _ in range(repeats):
        for start in range(0, len(frames) - n + 1, n):
            track = liveness.new_track()
            t0, c0 = time.perf_counter(), time.process_time()
            for k, (rgb, face) in enumerate(frames[start : start + n]):
                track.add(rgb, face, k / 30.0)
            track.result()
            wall.append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.process_time() - c0) * 1000.0)
    return wall, cpu


def long_tracks(cfg: Config, perception: Perception, clips: dict[str, list[tuple[np.ndarray, Face]]], n: int,
                repeats: int) -> dict[str, object]:
    """The default variant on tracks of `n` frames: a track is judged by its weakest window of
    WINDOW_FRAMES, so a longer track (waiting for a card, a challenge) pays one CNN pass per window."""
    liveness = Liveness(cfg, perception.store)
    out: dict[str, object] = {"track_frames": n, "windows_per_track": n // WINDOW_FRAMES}
    for clip, frames in clips.items():
        _, cpu = per_track_ms(liveness, frames, n, repeats)
        out[clip.split(".")[0]] = {"cpu_ms_per_track_p50": round(float(np.median(cpu)), 2),
                                   "cpu_ms_per_track_p95": round(float(np.percentile(cpu, 95)), 2), "tracks": len(cpu)}
    return out


def reference_ms(perception: Perception, runs: int = 100) -> dict[str, float]:
    """CPU ms of one embedder forward pass: how busy/fast this machine is right now."""
    from edge.perception.runtime import open_session

    session = open_session(perception.store.path(REFERENCE), "onnxruntime", 1)
    x = {session.inputs[0].name: np.zeros((1, 3, 112, 112), np.float32)}
    for _ in range(10):
        session.run(x)
    times = []
    for _ in range(runs):
        c0 = time.process_time()
        session.run(x)
        times.append((time.process_time() - c0) * 1000.0)
    return {"min": round(min(times), 2), "p50": round(float(np.median(times)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--track-frames", type=int, default=10, help="frames per track before it is decided")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=120, help="frames read from each clip")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cfg = replace(Config(), models=ModelsConfig(threads=1))
    perception = Perception(cfg, with_embedder=False)
    clips = {clip: frames_with_faces(perception, VIDEOS / clip, args.frames) for clip in CLIPS}
    result: dict[str, object] = {
        "track_frames": args.track_frames,
        "frames": sum(len(f) for f in clips.values()),
        "cpu": "1 core (sched_setaffinity), onnxruntime intra_op_num_threads=1",
    }
    variants = {}
    for model, precision, k, margin, backend in VARIANTS:
        lv = replace(cfg.liveness, model=model, precision=precision, passive_frames=k, recheck_margin=margin)
        models = replace(cfg.models, backend=backend)
        liveness = Liveness(replace(cfg, liveness=lv, models=models), perception.store)
        per_track_ms(liveness, clips[CLIPS[0]][: args.track_frames * 2], args.track_frames, 1)  # warm-up
        entry = {}
        # Live and replay tracks apart: a replay is where the second opinion gets asked.
        for clip, frames in clips.items():
            wall, cpu = per_track_ms(liveness, frames, args.track_frames, args.repeats)
            entry[clip.split(".")[0]] = {
                # min: the run least disturbed by other processes on a shared machine
                "cpu_ms_per_track_min": round(float(np.min(cpu)), 2),
                "cpu_ms_per_track_p50": round(float(np.median(cpu)), 2),
                "cpu_ms_per_track_p95": round(float(np.percentile(cpu, 95)), 2),
                "wall_ms_per_track_p50": round(float(np.median(wall)), 2),
                "tracks": len(wall),
            }
        variants[f"{model}_{precision}_k{k}_recheck{margin}_{backend}"] = entry
    result["variants"] = variants
    result["long_tracks"] = long_tracks(cfg, perception, clips, 3 * args.track_frames, args.repeats)
    result[f"reference_{REFERENCE}_forward_cpu_ms"] = reference_ms(perception)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
