"""1:N identification on LFW identities through the real encrypted gallery; prints one JSON object.

    .venv/bin/python bench/identify.py [--lfw ../shared/data/lfw/images] [--strangers 0.2] [--seed 0]

Protocol (open set, with distractors):
- people with ≥ 2 photos are split at random: `1 - strangers` of them are enrolled with their
  first photo and probed with every other photo; the rest are never enrolled and all their photos
  are stranger probes;
- every person with a single photo is enrolled as a distractor (never probed);
- each probe runs detect → align → embed → `Gallery.identify`.
Reported: gallery size, `top1_rate` / `top5_rate` (closed set: is the right person ranked first /
in the first five), `tpir` (right person first AND above the threshold), `fpir` (stranger
probes that match anyone above the threshold), at each `--target-fmr` threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.gallery.search import Gallery
from edge.gallery.store import PersonProfile
from edge.gallery.thresholds import match_threshold
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.imageio import load_image

REPO = Path(__file__).resolve().parents[1]


def embed_people(perception: Perception, root: Path) -> dict[str, list[np.ndarray | None]]:
    people: dict[str, list[np.ndarray | None]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        vectors: list[np.ndarray | None] = []
        for path in sorted(folder.glob("*.jpg")):
            faces = perception.faces(load_image(path))
            vectors.append(faces[0].embedding if faces else None)
        people[folder.name] = vectors
    return people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared/data/lfw/images")
    parser.add_argument("--strangers", type=float, default=0.2, help="share of multi-photo people never enrolled")
    parser.add_argument("--max-people", type=int, default=0, help="use only the first N people (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-fmr", type=float, nargs="+", default=[Config().match.target_fmr])
    args = parser.parse_args()
    cfg = Config()
    perception = Perception(cfg)
    started = time.perf_counter()
    people = embed_people(perception, args.lfw)
    if args.max_people:
        people = dict(list(people.items())[: args.max_people])
    embed_s = time.perf_counter() - started
    rng = np.random.default_rng(args.seed)
    multi = sorted(name for name, v in people.items() if len(v) >= 2)
    strangers = set(rng.choice(multi, size=int(len(multi) * args.strangers), replace=False).tolist())
    thresholds = {
        fmr: match_threshold(replace(cfg, match=replace(cfg.match, target_fmr=fmr)), perception.store)
        for fmr in args.target_fmr
    }
    threshold = thresholds[args.target_fmr[0]]
    dim = embedder_spec(cfg.embed.model).dim
    hits1 = hits5 = probes = stranger_probes = no_face = 0
    genuine_top: list[float] = []  # top score of probes whose top candidate is right (else -inf)
    stranger_top: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(
        Path(tmp), os.urandom(32), embedder_model_name(cfg), dim, threshold, create=True
    ) as gallery:
        for name, vectors in people.items():
            if name not in strangers and vectors[0] is not None:
                gallery.enroll(PersonProfile(name=name), [vectors[0]], [1.0])
        enrolled = len(gallery)
        for name, vectors in people.items():
            is_stranger = name in strangers
            for vector in vectors if is_stranger else vectors[1:]:
                if vector is None:
                    no_face += 1
                    continue
                match = gallery.identify(vector, k=5)
                ranked = [c.person for c in match.candidates]
                if is_stranger:
                    stranger_probes += 1
                    stranger_top.append(match.score)
                    continue
                probes += 1
                hits1 += bool(ranked) and ranked[0] == name
                hits5 += name in ranked
                genuine_top.append(match.score if ranked and ranked[0] == name else -np.inf)
    print(
        json.dumps(
            {
                "dataset": str(args.lfw),
                "embedder": embedder_model_name(cfg),
                "gallery_identities": enrolled,
                "distractors": sum(1 for v in people.values() if len(v) == 1),
                "probes": probes,
                "stranger_probes": stranger_probes,
                "no_face": no_face,
                "top1_rate": round(hits1 / max(probes, 1), 4),
                "top5_rate": round(hits5 / max(probes, 1), 4),
                "open_set": [
                    {
                        "target_fmr": fmr,
                        "threshold": round(t, 4),
                        "tpir": round(float(np.mean(np.array(genuine_top) >= t)), 4),
                        "fpir": round(float(np.mean(np.array(stranger_top) >= t)), 4),
                    }
                    for fmr, t in thresholds.items()
                ],
                "embed_seconds": round(embed_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
