"""Open-set identification through the daemon's own gallery and threshold policy.

`run_openset` enrolls people into a real encrypted `Gallery` (the same class, the same
`ThresholdPolicy` a door opens with), growing it size by size, and at each size probes it:
- TPIR: probes of enrolled people whose own person is named (first and above the threshold);
- misidentified: probes of enrolled people named as somebody else;
- FPIR: probes of strangers (never enrolled) named as anyone — what `[match]
  stranger_accept_rate` bounds.
The threshold at each size is the one the policy gives that gallery, as on a device.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.gallery.search import Gallery
from edge.gallery.store import PersonProfile
from edge.gallery.thresholds import ThresholdPolicy, threshold_for


@dataclass(frozen=True, slots=True)
class SizeResult:
    persons: int
    templates: int
    threshold: float
    per_comparison_fmr: float | None
    probes: int
    named_right: int
    misidentified: int
    stranger_probes: int
    strangers_named: int

    def to_dict(self) -> dict[str, object]:
        return {
            "persons": self.persons,
            "templates": self.templates,
            "threshold": round(self.threshold, 4),
            "per_comparison_fmr": self.per_comparison_fmr,
            "probes": self.probes,
            "tpir": round(self.named_right / max(self.probes, 1), 4),
            "misidentified": self.misidentified,
            "stranger_probes": self.stranger_probes,
            "strangers_named": self.strangers_named,
            "fpir": round(self.strangers_named / max(self.stranger_probes, 1), 5),
        }


def _ladder(total: int, sizes: Sequence[int]) -> list[int]:
    return sorted({s for s in sizes if 0 < s < total} | {total})


def run_openset(
    model: str,
    policy: ThresholdPolicy,
    enrolled: dict[str, list[np.ndarray]],
    strangers: Sequence[np.ndarray],
    sizes: Sequence[int] = (100, 200, 500, 1000),
    seed: int = 0,
) -> list[SizeResult]:
    """`enrolled`: person → photos (the first is enrolled, the others are probes); strangers:
    probes of people never enrolled. People join in a random order; one result per size."""
    order = list(enrolled)
    np.random.default_rng(seed).shuffle(order)
    dim = next(iter(enrolled.values()))[0].shape[0]
    stranger_rows = np.stack(strangers) if len(strangers) else np.zeros((0, dim), np.float32)
    results = []
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(Path(tmp), os.urandom(32), model, dim, policy, create=True, snapshot=False) as gallery:
        joined = 0
        for size in _ladder(len(order), sizes):
            for name in order[joined:size]:
                gallery.enroll(PersonProfile(name=name), [enrolled[name][0]], [1.0])
            joined = size
            right = wrong = probes = 0
            for name in order[:size]:
                for vector in enrolled[name][1:]:
                    named = gallery.identify(vector, k=1).person
                    probes += 1
                    right += named == name
                    wrong += named is not None and named != name
            named_strangers = sum(gallery.identify(v, k=1).person is not None for v in stranger_rows)
            results.append(SizeResult(
                len(gallery), gallery.templates, gallery.threshold, gallery.threshold_fmr, probes, right, wrong,
                len(stranger_rows), named_strangers,
            ))
    return results


def pooled(runs: Sequence[Sequence[SizeResult]]) -> list[dict[str, object]]:
    """Counts of several runs (disjoint strangers) added up per size rank."""
    out = []
    for rank in range(min(len(r) for r in runs)):
        rows = [r[rank] for r in runs]
        probes, right = sum(r.probes for r in rows), sum(r.named_right for r in rows)
        sp, sn = sum(r.stranger_probes for r in rows), sum(r.strangers_named for r in rows)
        out.append({
            "persons": int(np.mean([r.persons for r in rows])),
            "threshold_range": [round(min(r.threshold for r in rows), 4), round(max(r.threshold for r in rows), 4)],
            "probes": probes,
            "tpir": round(right / max(probes, 1), 4),
            "misidentified": sum(r.misidentified for r in rows),
            "stranger_probes": sp,
            "strangers_named": sn,
            "fpir": round(sn / max(sp, 1), 5),
        })
    return out


def held_out_openset(cfg: Config, data: Path, groups: int = 10, sizes: Sequence[int] = (100, 200, 500, 1000), seed: int = 0, flip: bool = False) -> dict[str, object]:
    """bench/openset.py's protocol: every LFW person of `data` a stranger exactly once, thresholds
    from calibrations re-fitted without that group's people; counts pooled over the groups."""
    from edge.eval import faceset, tail_fit

    started = time.perf_counter()
    fs = faceset.load(cfg, data, progress=False)
    vectors = fs.vectors(flip)
    ids = np.array([it.identity for it in fs.items])
    lfw_people = sorted({it.identity for it in fs.items if it.source == "lfw"})
    labelled = tail_fit.fitting_rows(fs)
    runs = []
    for group in np.array_split(np.random.default_rng(seed).permutation(lfw_people), groups):
        out = set(group.tolist())
        cal = tail_fit.calibrate(fs.subset(labelled[~np.isin(ids[labelled], list(out))]), "", flip)
        policy = ThresholdPolicy(threshold_for(cal, cfg.match.target_fmr), None, cal, cfg.match.stranger_accept_rate)
        enrolled: dict[str, list[np.ndarray]] = {}
        strangers = []
        for row in labelled:  # LFW's strangers are never enrolled; everyone else may be
            if ids[row] in out:
                strangers.append(vectors[row])
            elif fs.items[row].source == "lfw" or ids[row] not in enrolled:
                # Other sources' people are distractors (one photo): TPIR is LFW's, as the issue asks.
                enrolled.setdefault(ids[row], []).append(vectors[row])
        runs.append(run_openset(fs.model, policy, enrolled, strangers, sizes, seed))
    return {
        "embedder": fs.model, "flip": flip, "stranger_accept_rate": cfg.match.stranger_accept_rate,
        "groups": groups, "lfw_people": len(lfw_people), "faces": len(fs.items),
        "sizes": pooled(runs), "seconds": round(time.perf_counter() - started, 1),
    }
