"""Presentation-attack detection metrics as ISO/IEC 30107-3 defines them, and threshold choice.

- APCER: share of attack presentations accepted as live (score >= threshold), per attack type;
  the overall APCER here is the pooled one, with the per-type figures reported beside it.
- BPCER: share of live (bona fide) presentations rejected (score < threshold).
- ACER = (APCER + BPCER) / 2.
Thresholds are never chosen on the items they are then scored on: `cross_validate` picks
each fold's threshold on the other folds (or other sources) and pools the held-out decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ThresholdRule = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True, slots=True)
class Item:
    label: str  # "live" | "spoof"
    score: float
    attack_type: str = ""
    source: str = ""


def rates(live: np.ndarray, spoof: np.ndarray, threshold: float) -> tuple[float, float]:
    """(APCER, BPCER) at `threshold`; NaN where a class is empty."""
    apcer = float((spoof >= threshold).mean()) if spoof.size else float("nan")
    bpcer = float((live < threshold).mean()) if live.size else float("nan")
    return apcer, bpcer


def threshold_at_apcer(spoof: np.ndarray, target: float) -> float:
    """Lowest threshold accepting at most floor(target × n) of these attacks."""
    if not spoof.size:
        return 0.5
    ordered = np.sort(spoof)[::-1]
    allowed = int(np.floor(target * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def threshold_min_acer(live: np.ndarray, spoof: np.ndarray) -> float:
    """Threshold minimising ACER on these scores (midpoint between neighbouring scores)."""
    values = np.unique(np.concatenate([live, spoof]))
    candidates = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2, [np.nextafter(values[-1], np.inf)]])
    live_sorted, spoof_sorted = np.sort(live), np.sort(spoof)
    bpcer = np.searchsorted(live_sorted, candidates, side="left") / max(len(live), 1)
    apcer = 1.0 - np.searchsorted(spoof_sorted, candidates, side="left") / max(len(spoof), 1)
    return float(candidates[int(np.argmin(apcer + bpcer))])


def split(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    live = np.array([i.score for i in items if i.label == "live"], dtype=np.float64)
    spoof = np.array([i.score for i in items if i.label == "spoof"], dtype=np.float64)
    return live, spoof


def summarise(items: Sequence[Item], accepted: Sequence[bool], threshold: float) -> dict[str, object]:
    """APCER/BPCER/ACER and per-type/per-source figures from per-item decisions."""
    def share(mask: list[bool], want_accept: bool) -> float | None:
        picked = [a for a, m in zip(accepted, mask, strict=True) if m]
        if not picked:
            return None
        return round(float(np.mean([a == want_accept for a in picked])), 4)

    spoof_mask = [i.label == "spoof" for i in items]
    live_mask = [i.label == "live" for i in items]
    apcer, bpcer = share(spoof_mask, True), share(live_mask, False)
    out: dict[str, object] = {
        "apcer": apcer,
        "bpcer": bpcer,
        "acer": None if apcer is None or bpcer is None else round((apcer + bpcer) / 2, 4),
        "threshold": round(threshold, 6),
        "n_live": sum(live_mask),
        "n_spoof": sum(spoof_mask),
    }
    types = sorted({i.attack_type or "unspecified" for i in items if i.label == "spoof"})
    out["apcer_by_attack_type"] = {
        t: share([i.label == "spoof" and (i.attack_type or "unspecified") == t for i in items], True) for t in types
    }
    sources = sorted({i.source for i in items if i.source})
    out["by_source"] = {
        s: {
            "apcer": share([i.label == "spoof" and i.source == s for i in items], True),
            "bpcer": share([i.label == "live" and i.source == s for i in items], False),
            "n_live": sum(i.label == "live" and i.source == s for i in items),
            "n_spoof": sum(i.label == "spoof" and i.source == s for i in items),
        }
        for s in sources
    }
    return out


def folds_by_label(items: Sequence[Item], k: int, seed: int = 0) -> list[int]:
    """Fold index per item, stratified by label, deterministic."""
    rng = np.random.default_rng(seed)
    fold = [0] * len(items)
    for label in ("live", "spoof"):
        idx = [n for n, i in enumerate(items) if i.label == label]
        for pos, n in enumerate(rng.permutation(idx)):
            fold[int(n)] = pos % k
    return fold


def cross_validate(items: Sequence[Item], groups: Sequence[object], rule: ThresholdRule) -> tuple[list[bool], list[float]]:
    """Held-out decisions: each group's threshold comes from the items of all other groups."""
    accepted = [False] * len(items)
    thresholds = []
    for g in sorted(set(groups), key=str):
        train = [i for i, gi in zip(items, groups, strict=True) if gi != g]
        live, spoof = split(train)
        if not live.size or not spoof.size:
            raise ValueError(f"group {g!r}: the other groups lack live or spoof items")
        t = rule(live, spoof)
        thresholds.append(t)
        for n, (item, gi) in enumerate(zip(items, groups, strict=True)):
            if gi == g:
                accepted[n] = item.score >= t
    return accepted, thresholds


def auc(live: np.ndarray, spoof: np.ndarray) -> float:
    """P(live score > spoof score), ties half (Mann-Whitney)."""
    if not live.size or not spoof.size:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([live, spoof]), kind="stable"), kind="stable") + 1.0
    values = np.concatenate([live, spoof])
    # Average ranks over ties.
    for v in np.unique(values):
        m = values == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    u = ranks[: len(live)].sum() - len(live) * (len(live) + 1) / 2
    return float(u / (len(live) * len(spoof)))
