"""Per-stage latency of the perception core on ONE thread; prints one JSON object.

    .venv/bin/python bench/perception.py [--image PATH] [--repeat 200]

Stages: detection (short and full range) on the whole frame; FaceMesh landmarks, alignment and
embedding per face, for every embedder and precision (`align_embed_*` = warp + embed, flip off;
`embed_*_flip` = with the mirrored chip). The frame is 1280×720: the given image (default: a bundled demo photo) scaled to fit inside it,
on a grey background.
Each figure is the median over `--repeat` runs after a warm-up; p90 is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge.config import Config
from edge.perception.faces import Perception
from edge.perception.imageio import load_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO / "assets/demo/gallery/Barack_Obama/obama.jpg"


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    for _ in range(max(3, repeat // 10)):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return {"p50": round(statistics.median(samples), 3), "p90": round(samples[int(0.9 * len(samples))], 3)}


def frame_1280x720(path: Path) -> np.ndarray:
    image = load_image(path)
    h, w = image.shape[:2]
    scale = min(1280 / w, 720 / h)
    fitted = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    frame = np.full((720, 1280, 3), 128, dtype=np.uint8)
    y, x = (720 - fitted.shape[0]) // 2, (1280 - fitted.shape[1]) // 2
    frame[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
    return frame


def perception_for(model: str, precision: str, detector: str = "short", flip: bool = False) -> Perception:
    cfg = Config()
    cfg = replace(
        cfg,
        models=replace(cfg.models, threads=1),
        detect=replace(cfg.detect, model=detector),
        embed=replace(cfg.embed, model=model, precision=precision, flip=flip),
    )
    return Perception(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    frame = frame_1280x720(args.image)
    out: dict[str, object] = {
        "frame": "1280x720",
        "threads": 1,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for detector in ("short", "full"):
        p = perception_for("edgeface_xs", "int8", detector)
        out[f"detect_{detector}_ms"] = timed(lambda p=p: p.detector(frame), args.repeat)
    p = perception_for("edgeface_xs", "int8")
    detections = p.detector(frame)
    if not detections:
        raise SystemExit(f"{args.image}: no face found in the 1280x720 frame; pick another --image")
    det = detections[0]
    out["landmarks_mesh_ms"] = timed(lambda: p.mesh(frame, det), args.repeat)
    mesh = p.mesh(frame, det)
    for model in ("edgeface_xxs", "edgeface_xs", "dlib_resnet"):
        for precision in ("int8", "fp32"):
            q = perception_for(model, precision)
            key = f"{model}_{precision}"
            chip = q.aligner(frame, det, mesh)
            out[f"align_{key}_ms"] = timed(lambda q=q: q.aligner(frame, det, mesh), args.repeat)
            out[f"embed_{key}_ms"] = timed(lambda q=q, c=chip: q.embedder([c]), args.repeat)
            out[f"align_embed_{key}_ms"] = timed(lambda q=q: q.embedder([q.aligner(frame, det, mesh)]), args.repeat)
            flipped = perception_for(model, precision, flip=True)
            out[f"embed_{key}_flip_ms"] = timed(lambda f=flipped, c=chip: f.embedder([c]), args.repeat)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
