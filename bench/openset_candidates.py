"""Candidates that did not make it into the shipped matcher, measured like bench/openset_variants.py; one JSON object.

    .venv/bin/python bench/openset_candidates.py [--data ../shared/data] [--models-src ../shared/models-src]

Same protocol and the same caveat as bench/openset_variants.py (LFW View-2 folds as strangers,
TPIR read at FPIR set on the pooled strangers: a ranking, not a shipped figure). Candidates:
- fusing EdgeFace with a second embedder of other training data: dlib's ResNet
  (face-recognition-models, CC0) and foamliu's MobileFaceNet (MS1M; ../shared/models-src, ONNX,
  ImageNet input statistics, provenance unproven — see its README), score weight w on EdgeFace;
- choosing which photo of a person is enrolled by the agreement of the embedder's outputs on the
  chip and its mirror image (a frontal, well-aligned face gives the same identity both ways) —
  the choice an enrollment station could make among the photos it is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from openset_variants import _faces, open_set_scores, tpir_at  # noqa: E402

from edge.config import Config  # noqa: E402
from edge.eval import faceset  # noqa: E402
from edge.eval.lfw import central_face  # noqa: E402
from edge.perception.faces import Perception  # noqa: E402

_MEAN, _STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mobilefacenet(root: Path, onnx: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """key → MobileFaceNet embedding of chip + mirror (its authors' own test-time recipe), cached."""
    import onnxruntime as ort

    cache = Path.home() / ".cache/facegate/candidates-mobilefacenet.npz"
    if cache.exists():
        data = np.load(cache)
        found = {str(k): v for k, v in zip(data["keys"], data["vectors"], strict=True)}
        if all(k in found for k in keys):
            return found
    wanted = set(keys)
    items = [it for it in faceset.collect(root) if it.key in wanted]
    perception, session = Perception(Config()), ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for item, image in faceset._images(root, items):  # noqa: SLF001 - the face set's own reader
        face = None if image is None else central_face(perception.faces(image, embed=False), image.shape)
        if face is None or face.chip is None:
            continue
        vec = 0
        for chip in (face.chip.image, face.chip.image[:, ::-1]):
            x = ((chip.astype(np.float32) / 255 - _MEAN) / _STD).transpose(2, 0, 1)[None]
            vec = vec + session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0].reshape(-1)
        out[item.key] = vec
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, keys=np.array(list(out)), vectors=np.array(list(out.values())))
    return out


def _chosen_scores(vectors: np.ndarray, items: list, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """open_set_scores, but each enrolled person's photo is the one of highest `quality`."""
    ids, folds = np.array([it.identity for it in items]), np.array([it.fold for it in items])
    stranger, genuine = [], []
    for k in range(1, 6):
        best: dict[str, int] = {}
        for i, it in enumerate(items):
            if it.fold != k and (it.identity not in best or quality[i] > quality[best[it.identity]]):
                best[it.identity] = i
        rows = np.array(list(best.values()))
        enrolled = set(rows.tolist())
        probes = np.array([i for i in range(len(items)) if i not in enrolled])
        scores = vectors[probes] @ vectors[rows].T
        top = scores.argmax(axis=1)
        for p, b, t in zip(probes, scores[np.arange(len(probes)), top], top, strict=True):
            (stranger if folds[p] == k else genuine).append(b if folds[p] == k or ids[rows[t]] == ids[p] else -np.inf)
    return np.asarray(stranger), np.asarray(genuine)


def _mirror_agreement(fs: faceset.FaceSet) -> np.ndarray:
    """cos(embedding of the chip, embedding of its mirror) per item, from the face set's cache."""
    for file in sorted((Path.home() / ".cache/facegate").glob(f"faceset-{fs.model}-*.npz")):
        data = np.load(file)
        if [str(k) for k in data["keys"]] == [it.key for it in fs.items]:
            return (_unit(data["plain"]) * _unit(data["mirror"])).sum(axis=1)
    raise SystemExit(f"no face-set cache of {fs.model} matches (run bench/openset_variants.py first)")


def _row(stranger: np.ndarray, genuine: np.ndarray) -> dict[str, object]:
    return {"rank1": round(float(np.isfinite(genuine).mean()), 4), "at": [tpir_at(stranger, genuine, f) for f in (1e-2, 1e-3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--models-src", type=Path, default=REPO.parent / "shared/models-src")
    args = parser.parse_args()
    out: dict[str, object] = {}
    sets = {m: _faces(args.data, m) for m in ("edgeface_xxs_int8", "edgeface_xs_fp32", "dlib_resnet_fp32")}
    lfw = {m: fs.where(source="lfw") for m, fs in sets.items()}
    keys = [sets["edgeface_xxs_int8"].items[i].key for i in lfw["edgeface_xxs_int8"]]
    mfn = mobilefacenet(args.data, args.models_src / "foamliu-MobileFaceNet/MobileFaceNet.onnx", keys)
    for model in ("edgeface_xxs_int8", "edgeface_xs_fp32"):
        fs = sets[model]
        rows = lfw[model]
        items = [fs.items[i] for i in rows]
        base = fs.vectors(False)[rows]
        out[model] = _row(*open_set_scores(base, items))
        second = {"mobilefacenet": _unit(np.stack([mfn[it.key] for it in items]))}
        dlib_fs = sets["dlib_resnet_fp32"]
        dlib_row = {it.key: i for i, it in enumerate(dlib_fs.items)}
        if all(it.key in dlib_row for it in items):
            second["dlib_resnet"] = dlib_fs.vectors(False)[[dlib_row[it.key] for it in items]]
        for name, other in second.items():
            for w in (0.5, 0.6, 0.7):
                fused = np.hstack([np.sqrt(w) * base, np.sqrt(1 - w) * other])
                out[f"{model} + {name} w={w}"] = _row(*open_set_scores(fused, items))
        mirror_agreement = _mirror_agreement(fs)[rows]
        out[f"{model} enrolled photo by mirror agreement"] = _row(*_chosen_scores(base, items, mirror_agreement))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
