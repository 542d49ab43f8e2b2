"""`facegate demo`: enroll the bundled gallery photos, identify every face in the bundled probes.

Offline, no broker, no device state: the gallery lives in memory for the run. Templates are the
normalised mean of a person's photo embeddings; a probe face takes the best-scoring person when
the cosine similarity clears the threshold, else it is `unknown`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.embed import embedder_spec
from edge.errors import FacegateError
from edge.imageio import load_image
from edge.perception import Perception

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm")


def match_threshold(cfg: Config) -> float:
    """The configured threshold, or the embedder's LFW-calibrated one when it is 0."""
    if cfg.match.threshold != 0.0:
        return cfg.match.threshold
    return embedder_spec(cfg.embed.model).thresholds[cfg.embed.precision]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def enroll_folder(perception: Perception, gallery_dir: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, templates (n, dim), problems) from `gallery_dir/<Person_Name>/*.jpg`."""
    names, templates, problems = [], [], []
    for person_dir in sorted(p for p in gallery_dir.iterdir() if p.is_dir()):
        vectors = []
        for path in _images(person_dir):
            try:
                faces = perception.faces(load_image(path))
            except FacegateError as exc:
                problems.append(str(exc))
                continue
            if not faces:
                problems.append(f"{path}: no face found")
                continue
            face = faces[0]  # largest face: the person the photo is of
            if not face.quality.ok:
                problems.append(f"{path}: rejected ({'; '.join(face.quality.reasons)})")
                continue
            vectors.append(face.embedding)
        if vectors:
            mean = np.mean(vectors, axis=0)
            names.append(person_dir.name.replace("_", " "))
            templates.append(mean / np.linalg.norm(mean))
    return names, np.array(templates, dtype=np.float32), problems


def run_demo(cfg: Config, assets: Path) -> int:
    started = time.perf_counter()
    perception = Perception(cfg)
    names, templates, problems = enroll_folder(perception, assets / "gallery")
    threshold = match_threshold(cfg)
    print(f"enrolled {len(names)} people from {assets / 'gallery'}: {', '.join(names)}")
    for problem in problems:
        print(f"  skipped {problem}")
    print(f"embedder {cfg.embed.model} ({cfg.embed.precision}), match threshold {threshold:.3f}\n")
    header = f"{'probe':<26} {'face':>4}  {'box (x1,y1,x2,y2)':<22} {'person':<16} {'score':>6}  quality"
    print(header)
    print("-" * len(header))
    counts = {"match": 0, "unknown": 0}
    for path in _images(assets / "probes"):
        try:
            faces = perception.faces(load_image(path))
        except FacegateError as exc:
            print(f"{path.name:<26} error: {exc}")
            continue
        if not faces:
            print(f"{path.name:<26} {'-':>4}  no face found")
        for k, face in enumerate(faces, 1):
            scores = templates @ face.embedding if len(names) else np.zeros(0)
            best = int(np.argmax(scores)) if len(scores) else -1
            score = float(scores[best]) if best >= 0 else float("nan")
            person = names[best] if best >= 0 and score >= threshold else "unknown"
            counts["match" if person != "unknown" else "unknown"] += 1
            box = ",".join(f"{v:.0f}" for v in face.detection.box)
            q = "ok" if face.quality.ok else "; ".join(face.quality.reasons)
            print(f"{path.name:<26} {k:>4}  {box:<22} {person:<16} {score:>6.3f}  {q}")
    elapsed = time.perf_counter() - started
    stages = ", ".join(f"{k} {np.median(v):.1f} ms" for k, v in perception.timings_ms.items())
    print(f"\nsummary: {counts['match']} faces identified, {counts['unknown']} unknown, {elapsed:.1f} s total")
    print(f"median per stage: {stages}")
    return 0
