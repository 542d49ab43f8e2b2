"""Run by an installed (or extracted) package's own interpreter: every model choice the config
offers loads from that install's models and works on a real photo. Prints one JSON object.

    /opt/facegate/venv/bin/python3 tests/packaging/every_model.py PHOTO

Run by path, so `edge` comes from the package's site-packages, never from a checkout; the
result says where it came from so the caller can check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge.config.load import config_from_dict
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness.model import PassiveModel
from edge.perception.registry import BACKENDS, DETECTORS, EMBEDDERS, LIVENESS_MODELS, PRECISIONS


def main(photo: Path) -> dict[str, object]:
    rgb = load_image(photo)
    perception: list[dict[str, object]] = []
    # Every embedder x precision, each on another detector / backend / landmark path so that every
    # detector, landmark model and backend is used too.
    for n, (embedder, precision) in enumerate((e, p) for e in EMBEDDERS for p in PRECISIONS):
        backend, detector = BACKENDS[n % len(BACKENDS)], list(DETECTORS)[n % len(DETECTORS)]
        landmarks = "keypoints" if n % 4 == 3 else "mesh"
        cfg = config_from_dict({"models": {"backend": backend}, "detect": {"model": detector},
                                "align": {"landmarks": landmarks}, "embed": {"model": embedder, "precision": precision}})
        p = Perception(cfg)
        faces = p.faces(rgb)
        perception.append({"embedder": embedder, "precision": precision, "backend": backend, "detector": detector,
                           "landmarks": landmarks, "models": p.model_names, "faces": len(faces),
                           "dims": [len(f.embedding) for f in faces if f.embedding is not None]})
    box = tuple(float(v) for v in faces[0].detection.box)
    liveness = []
    for backend in BACKENDS:
        for model in LIVENESS_MODELS:
            for precision in PRECISIONS:  # int8 has no TFLite twin: it runs on ONNX Runtime (runtime.resolve)
                score = PassiveModel.from_store(p.store, model, precision, backend=backend)(rgb, box)
                liveness.append({"model": model, "precision": precision, "backend": backend, "score": score})
    import edge

    return {"edge": edge.__file__, "models_dir": str(p.store.dir), "perception": perception, "liveness": liveness}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
