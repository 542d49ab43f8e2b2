"""Install smoke run: enroll the demo gallery, identify the demo probes; prints one JSON object.

    python bench/smoke_identify.py [--repeats 3] [--models-dir DIR]

What `bench/arm64_smoke.sh` runs inside an arm64 chroot (and what it compares with on the build
machine): the bundled photos in assets/demo/gallery/<Name>/ are enrolled into a temporary
encrypted gallery, then every probe in assets/demo/probes/ goes through the whole path (decode →
detect → landmarks → align → quality → embed → 1:N search), `--repeats` times. Reported:
`identify_ms` (median and range per photo, model load excluded), `load_s`, and who each probe
was identified as (a wrong answer under emulation would mean a broken arm64 build, not a slow one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from edge.config import Config
from edge.gallery.search import Gallery
from edge.gallery.store import PersonProfile
from edge.gallery.thresholds import match_threshold
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.imageio import load_image
from edge.perception.modelstore import ModelStore, default_models_dir

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "assets" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    cfg = Config()
    started = time.perf_counter()
    store = ModelStore(args.models_dir or default_models_dir())
    perception = Perception(cfg, store)
    load_s = time.perf_counter() - started
    threshold = match_threshold(cfg, store)
    times: list[float] = []
    answers: dict[str, list[str | None]] = {}
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(
        Path(tmp), os.urandom(32), embedder_model_name(cfg), embedder_spec(cfg.embed.model).dim, threshold, create=True
    ) as gallery:
        for folder in sorted(p for p in (DEMO / "gallery").iterdir() if p.is_dir()):
            faces = [f for path in sorted(folder.glob("*.jp*g")) for f in perception.faces(load_image(path))[:1]]
            gallery.enroll(PersonProfile(name=folder.name), [f.embedding for f in faces], [1.0] * len(faces))
        for _ in range(args.repeats):
            for probe in sorted((DEMO / "probes").glob("*.jp*g")):
                began = time.perf_counter()
                faces = perception.faces(load_image(probe))
                names = [gallery.identify(f.embedding).person for f in faces if f.embedding is not None]
                times.append((time.perf_counter() - began) * 1000.0)
                answers[probe.name] = names
        enrolled = len(gallery)
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "embedder": embedder_model_name(cfg),
        "enrolled": enrolled,
        "probes": len(answers),
        "repeats": args.repeats,
        "load_s": round(load_s, 2),
        "identify_ms_median": round(statistics.median(times), 1),
        "identify_ms_min": round(min(times), 1),
        "identify_ms_max": round(max(times), 1),
        "identified": answers,
    }))


if __name__ == "__main__":
    main()
