"""`facegate eval lfw`: the full pipeline on raw LFW images, scored with LFW's own protocol.

Every image goes through detect → landmarks → align → embed exactly as at a door. The face
used is the detection nearest the image centre (LFW centres the labelled person); an image with
no detected face makes its pairs failures, never skips, so detection recall is part of the
figure.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.errors import FacegateError
from edge.eval.lfw_metrics import evaluate, parse_pairs
from edge.eval.lfw_report import write_report
from edge.gallery.thresholds import calibrate, read_calibrations, write_calibrations
from edge.perception.faces import Face, Perception, embedder_model_name
from edge.perception.imageio import load_image


def central_face(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    if not faces:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2

    def offset(f: Face) -> float:
        x1, y1, x2, y2 = f.detection.box
        return ((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2

    return min(faces, key=offset)


def embed_images(
    perception: Perception, paths: list[Path], progress: bool
) -> tuple[dict[Path, np.ndarray | None], float]:
    """Embedding per image (None when no face / unreadable) and mean ms per image."""
    vectors: dict[Path, np.ndarray | None] = {}
    started = time.perf_counter()
    for n, path in enumerate(paths, 1):
        try:
            image = load_image(path)
            face = central_face(perception.faces(image, embed=False), image.shape)
        except FacegateError:
            face = None
        vectors[path] = None if face is None else perception.embedder([face.chip])[0]  # type: ignore[misc]
        if progress and (n % 200 == 0 or n == len(paths)):
            print(f"\rembedding images: {n}/{len(paths)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return vectors, elapsed_ms / max(1, len(paths))


def _calibrate(perception: Perception, vectors: dict[Path, np.ndarray | None], target: Path) -> dict[str, object]:
    """Add this embedder's impostor-score calibration to `target` (other models' entries kept)."""
    name = embedder_model_name(perception.cfg)
    found = [(p, v) for p, v in vectors.items() if v is not None]
    cal = calibrate(name, perception.store.record(name).version, np.stack([v for _, v in found]), [p.parent.name for p, _ in found])
    calibrations = read_calibrations(target)
    calibrations[name] = cal
    write_calibrations(target, calibrations)
    return {"calibration": {"file": str(target), "n_impostor": cal.n_impostor, "fmr": list(cal.fmr), "threshold": list(cal.threshold), "fnmr": list(cal.fnmr)}}


def run_lfw(
    cfg: Config,
    images: Path,
    pairs_file: Path,
    report: Path | None = None,
    progress: bool = True,
    calibration: Path | None = None,
) -> dict[str, object]:
    pairs = parse_pairs(pairs_file, images)
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    perception = Perception(cfg)
    vectors, ms_per_image = embed_images(perception, paths, progress)
    scores = np.array(
        [
            float(np.dot(vectors[p.path_a], vectors[p.path_b]))  # type: ignore[arg-type]
            if vectors[p.path_a] is not None and vectors[p.path_b] is not None
            else np.nan
            for p in pairs
        ]
    )
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    result = evaluate(scores, same, folds)
    summary: dict[str, object] = dict(result.to_dict())
    summary.update(
        {
            "model": cfg.embed.model,
            "model_file": embedder_model_name(cfg),
            "precision": cfg.embed.precision,
            "landmarks": cfg.align.landmarks,
            "detector": cfg.detect.model,
            "flip": cfg.embed.flip,
            "n_images": len(paths),
            "detect_failures": sum(v is None for v in vectors.values()),
            "failed_pairs": int(np.isnan(scores).sum()),
            "ms_per_image": round(ms_per_image, 2),
        }
    )
    if calibration is not None:
        summary.update(_calibrate(perception, vectors, calibration))
    if report is not None:
        meta = {k: v for k, v in summary.items() if k not in result.to_dict()}
        write_report(report, result, scores, same, title=f"LFW verification — {cfg.embed.model} {cfg.embed.precision}", meta=meta)
    return summary
