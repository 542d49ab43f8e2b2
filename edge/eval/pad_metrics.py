"""Presentation-attack detection metrics as ISO/IEC 30107-3 defines them, and threshold choice.

- APCER: share of attack presentations accepted as live (score >= threshold), per attack type;
  the overall APCER here is the pooled one, with the per-type figures (and the worst type,
  ISO's APCER of the most successful species) reported beside it.
- BPCER: share of live (bona fide) presentations rejected (score < threshold).
- ACER = (APCER + BPCER) / 2.
Every rate comes with a 95 % Wilson score interval: the counts per source are small (8 to a few
hundred) and often 0 errors, where the normal approximation gives a zero-width interval and
Wilson still gives an honest upper bound (0 of 8 → up to 32 %). ACER's interval combines the two
Wilson intervals by MOVER (Newcombe 1998, Zou & Donner 2008), treating APCER and BPCER as
independent (they count disjoint items).
Thresholds are never chosen on the items they are then scored on: `cross_validate` picks
each fold's threshold on the other folds (or other sources) and pools the held-out decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ThresholdRule = Callable[[np.ndarray, np.ndarray], float]
Z95 = 1.959964  # two-sided 95 % normal quantile
UNSPECIFIED = "unspecified"  # attack type of an attack row that names none


@dataclass(frozen=True, slots=True)
class Item:
    label: str  # "live" | "spoof"
    score: float
    attack_type: str = ""
    source: str = ""

    @property
    def attack(self) -> str:
        return self.attack_type or UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Proportion:
    """`errors` of `n` presentations, with its Wilson score interval."""

    errors: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.errors / self.n if self.n else None

    def interval(self, z: float = Z95) -> tuple[float, float] | None:
        if not self.n:
            return None
        p, n, z2 = self.errors / self.n, self.n, z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        # Exact at the ends: 0 errors has lower bound 0, all errors upper bound 1.
        return (0.0 if self.errors == 0 else max(0.0, centre - half), 1.0 if self.errors == n else min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class ErrorRates:
    apcer: Proportion  # attacks accepted / attacks
    bpcer: Proportion  # live rejected / live

    @property
    def acer(self) -> float | None:
        a, b = self.apcer.rate, self.bpcer.rate
        return None if a is None or b is None else (a + b) / 2

    def acer_interval(self) -> tuple[float, float] | None:
        """MOVER interval of (APCER + BPCER) / 2 from the two Wilson intervals."""
        a, b, ia, ib = self.apcer.rate, self.bpcer.rate, self.apcer.interval(), self.bpcer.interval()
        if a is None or b is None or ia is None or ib is None:
            return None
        lo = (a + b - math.hypot(a - ia[0], b - ib[0])) / 2
        hi = (a + b + math.hypot(ia[1] - a, ib[1] - b)) / 2
        return max(0.0, lo), min(1.0, hi)

    def to_dict(self) -> dict[str, object]:
        return {
            "apcer": _r(self.apcer.rate), "apcer_ci95": _ci(self.apcer.interval()),
            "bpcer": _r(self.bpcer.rate), "bpcer_ci95": _ci(self.bpcer.interval()),
            "acer": _r(self.acer), "acer_ci95": _ci(self.acer_interval()),
            "n_live": self.bpcer.n, "n_spoof": self.apcer.n,
            "live_rejected": self.bpcer.errors, "spoof_accepted": self.apcer.errors,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ci(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(interval[0], 4), round(interval[1], 4)]


def error_rates(items: Sequence[Item], accepted: Sequence[bool], keep: Callable[[Item], bool] = lambda _i: True) -> ErrorRates:
    """APCER / BPCER counts over the items `keep` selects, from per-item decisions."""
    spoof = [a for i, a in zip(items, accepted, strict=True) if keep(i) and i.label == "spoof"]
    live = [a for i, a in zip(items, accepted, strict=True) if keep(i) and i.label == "live"]
    return ErrorRates(Proportion(sum(spoof), len(spoof)), Proportion(len(live) - sum(live), len(live)))


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


def _by_attack(items: Sequence[Item], accepted: Sequence[bool], keep: Callable[[Item], bool]) -> dict[str, object]:
    types = sorted({i.attack for i in items if i.label == "spoof" and keep(i)})
    out = {}
    for t in types:
        p = error_rates(items, accepted, lambda i, t=t: keep(i) and i.attack == t).apcer
        out[t] = {"apcer": _r(p.rate), "ci95": _ci(p.interval()), "n": p.n, "accepted": p.errors}
    return out


def summarise(items: Sequence[Item], accepted: Sequence[bool], threshold: float) -> dict[str, object]:
    """APCER/BPCER/ACER with 95 % intervals, overall, per attack type, per source and per
    source × attack type, from per-item decisions."""
    out: dict[str, object] = {**error_rates(items, accepted).to_dict(), "threshold": round(threshold, 6)}
    by_type = _by_attack(items, accepted, lambda _i: True)
    out["apcer_by_attack_type"] = by_type
    worst = [v["apcer"] for v in by_type.values() if isinstance(v, dict) and v["apcer"] is not None]
    out["apcer_worst_attack_type"] = max(worst) if worst else None
    sources = sorted({i.source for i in items if i.source})
    out["by_source"] = {
        s: {
            **error_rates(items, accepted, lambda i, s=s: i.source == s).to_dict(),
            "apcer_by_attack_type": _by_attack(items, accepted, lambda i, s=s: i.source == s),
        }
        for s in sources
    }
    return out


def non_response(items: Sequence[Item], responded: Sequence[bool]) -> dict[str, object]:
    """ISO/IEC 30107-3's non-response rates: presentations on which no decision was made (no
    face found), kept out of APCER / BPCER. BPNRR over live items, APNRR over attacks."""
    def rate(label: str, keep: Callable[[Item], bool]) -> dict[str, object]:
        picked = [r for i, r in zip(items, responded, strict=True) if i.label == label and keep(i)]
        p = Proportion(len(picked) - sum(picked), len(picked))
        return {"rate": _r(p.rate), "ci95": _ci(p.interval()), "no_response": p.errors, "n": p.n}

    out: dict[str, object] = {"bpnrr": rate("live", lambda _i: True), "apnrr": rate("spoof", lambda _i: True)}
    missed = sorted({i.source for i, r in zip(items, responded, strict=True) if not r and i.source})
    out["by_source"] = {
        s: {"bpnrr": rate("live", lambda i, s=s: i.source == s), "apnrr": rate("spoof", lambda i, s=s: i.source == s)}
        for s in missed
    }
    return out


@dataclass(frozen=True, slots=True)
class Split:
    """One held-out group: fit on `train`, report on `test` (indices into the items)."""

    group: str
    train: tuple[int, ...]
    test: tuple[int, ...]


def held_out_splits(groups: Sequence[object]) -> list[Split]:
    """One split per group (a fold, or a source): its items against all the others'."""
    names = sorted({str(g) for g in groups})
    if len(names) < 2:
        raise ValueError("held-out evaluation needs at least two groups")
    return [
        Split(
            name,
            tuple(n for n, g in enumerate(groups) if str(g) != name),
            tuple(n for n, g in enumerate(groups) if str(g) == name),
        )
        for name in names
    ]


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
    for s in held_out_splits(groups):
        live, spoof = split([items[n] for n in s.train])
        if not live.size or not spoof.size:
            raise ValueError(f"group {s.group!r}: the other groups lack live or spoof items")
        t = rule(live, spoof)
        thresholds.append(t)
        for n in s.test:
            accepted[n] = items[n].score >= t
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
