"""Which scoring separates strangers best at a fixed stranger rate? One JSON object.

    .venv/bin/python bench/openset_variants.py [--data ../shared/data]

LFW open set by View-2 fold (folds are identity-disjoint): for fold k, its people are the
strangers (every photo a probe), every other LFW person is enrolled with their first photo and
probed with the others. A variant's threshold is set on the pooled stranger probes of all five
folds to FPIR 1e-3 and 1e-2, and TPIR is read at it: a like-for-like ranking of variants, not
a figure to ship (the threshold is fitted on the very strangers it is scored on — the shipped
path is `facegate eval openset`, whose thresholds come from calibrations without the fold).
Variants: embedder and precision, flip averaging, two embedders fused, per-person bars from the
gallery's nearest neighbours, and cohort (T-)normalisation against the gallery's other scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import Config
from edge.eval import faceset


def _faces(root: Path, model: str) -> faceset.FaceSet:
    return faceset.load(faceset.config_for_model(Config(), model), root, progress=False)


def _lfw(fs: faceset.FaceSet, flip: bool) -> tuple[np.ndarray, list[faceset.Item]]:
    rows = fs.where(source="lfw")
    return fs.vectors(flip)[rows], [fs.items[i] for i in rows]


def open_set_scores(vectors: np.ndarray, items: list, nn_bar: float | None = None, tnorm: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(stranger top scores, genuine scores: right person ranked first, else -inf), over 5 folds."""
    stranger, genuine = [], []
    ids = np.array([it.identity for it in items])
    folds = np.array([it.fold for it in items])
    for k in range(1, 6):
        enrolled_rows: dict[str, int] = {}
        for i, it in enumerate(items):
            if it.fold != k and it.identity not in enrolled_rows:
                enrolled_rows[it.identity] = i
        g_rows = np.array(list(enrolled_rows.values()))
        g_ids = ids[g_rows]
        gallery = vectors[g_rows]
        bars = None
        if nn_bar is not None:
            gg = gallery @ gallery.T
            np.fill_diagonal(gg, -1.0)
            bars = gg.max(axis=1) + nn_bar  # a person must beat their nearest neighbour by nn_bar
        in_gallery = set(g_rows.tolist())
        probes = np.array([i for i in range(len(items)) if i not in in_gallery])
        scores = vectors[probes] @ gallery.T
        if tnorm:
            part = -np.sort(-scores, axis=1)[:, 1 : 1 + tnorm]
            scores = (scores - part.mean(axis=1, keepdims=True)) / (part.std(axis=1, keepdims=True) + 1e-6)
        top = scores.argmax(axis=1)
        best = scores[np.arange(len(probes)), top]
        if bars is not None:
            best = np.where(best >= bars[top], best, -np.inf)
        for p, b, t in zip(probes, best, top, strict=True):
            if folds[p] == k:
                stranger.append(b)
            else:
                genuine.append(b if g_ids[t] == ids[p] else -np.inf)
    return np.asarray(stranger), np.asarray(genuine)


def tpir_at(stranger: np.ndarray, genuine: np.ndarray, fpir: float) -> dict[str, float]:
    s = np.sort(stranger[np.isfinite(stranger)])[::-1]
    allowed = int(np.floor(fpir * stranger.size))
    t = float(np.nextafter(s[allowed], np.inf)) if allowed < s.size else -np.inf
    return {"fpir": fpir, "threshold": round(t, 4), "tpir": round(float((genuine >= t).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    args = parser.parse_args()
    sets = {m: _faces(args.data, m) for m in ("edgeface_xxs_int8", "edgeface_xs_int8", "edgeface_xxs_fp32", "edgeface_xs_fp32")}
    variants: dict[str, tuple[np.ndarray, list, dict]] = {}
    for model, fs in sets.items():
        for flip in (False, True):
            v, items = _lfw(fs, flip)
            variants[f"{model}{'+flip' if flip else ''}"] = (v, items, {})
    for a, b in (("edgeface_xxs_int8", "edgeface_xs_int8"), ("edgeface_xxs_fp32", "edgeface_xs_fp32")):
        va, items = _lfw(sets[a], True)
        vb, items_b = _lfw(sets[b], True)
        assert [i.key for i in items] == [i.key for i in items_b]
        variants[f"fused {a}+{b} (+flip)"] = (np.hstack([va, vb]) / np.sqrt(2.0), items, {})
    base_v, base_items = _lfw(sets["edgeface_xxs_int8"], False)
    variants["edgeface_xxs_int8 nn_bar 0.05"] = (base_v, base_items, {"nn_bar": 0.05})
    variants["edgeface_xxs_int8 tnorm 20"] = (base_v, base_items, {"tnorm": 20})
    out = {}
    for name, (v, items, kw) in variants.items():
        stranger, genuine = open_set_scores(v, items, **kw)
        out[name] = {"strangers": int(stranger.size), "genuine": int(genuine.size),
                     "rank1": round(float(np.isfinite(genuine).mean()), 4),
                     "at": [tpir_at(stranger, genuine, f) for f in (1e-2, 1e-3)]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
