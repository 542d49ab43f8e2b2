"""A fitted alternative to the fixed fusion, measured leave-one-source-out only.

The shipped fusion weights every cue's log-odds 1 (edge/perception/liveness/checker.py). A
logistic regression on the same single-frame cue log-odds (passive, glare, moiré) could weight
them from data, but only figures on a source it never saw say whether that carries over to a
camera nobody tuned on: `loso_logistic` fits on all other sources and decides the held-out one
at p >= 0.5. Classes are weighted to equal total weight (the decision then aims at ACER, not at
whichever class has more rows) with a small L2 penalty so a source with separable scores cannot
drive the weights to infinity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.eval import pad_metrics as pm
from edge.perception.liveness.checker import logit

FEATURES = ("passive", "glare", "moire")
L2 = 1e-2
NEWTON_STEPS = 50


@dataclass(frozen=True, slots=True)
class Logistic:
    weights: tuple[float, ...]  # one per FEATURES, then the intercept

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = np.clip(_design(x) @ np.asarray(self.weights), -50.0, 50.0)
        return 1.0 / (1.0 + np.exp(-z))


def features(cues: dict[str, float]) -> list[float]:
    """Cue log-odds; a missing cue is 0 (no evidence), as in the fusion."""
    return [logit(cues[k]) if k in cues else 0.0 for k in FEATURES]


def _design(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def fit_logistic(x: np.ndarray, live: np.ndarray) -> Logistic:
    """Class-balanced, L2-penalised logistic regression by Newton steps; `live` is 0/1."""
    a = _design(np.asarray(x, dtype=np.float64))
    y = np.asarray(live, dtype=np.float64)
    n_live, n_spoof = y.sum(), len(y) - y.sum()
    if not n_live or not n_spoof:
        raise ValueError("a logistic fit needs live and spoof rows")
    sample = np.where(y == 1, 0.5 / n_live, 0.5 / n_spoof)
    penalty = np.diag([L2] * (a.shape[1] - 1) + [0.0])  # the intercept is not shrunk
    w = np.zeros(a.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50.0, 50.0)))
        grad = a.T @ (sample * (p - y)) + penalty @ w
        hess = (a * (sample * p * (1 - p))[:, None]).T @ a + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-9:
            break
    return Logistic(tuple(float(v) for v in w))


def loso_logistic(items: Sequence[pm.Item], cues: Sequence[dict[str, float]]) -> dict[str, object]:
    """Held-out decisions per source (fit on the others), summarised, with each fit's weights."""
    x = np.array([features(c) for c in cues], dtype=np.float64)
    y = np.array([i.label == "live" for i in items])
    accepted = [False] * len(items)
    fits = {}
    for s in pm.held_out_splits([i.source for i in items]):
        model = fit_logistic(x[list(s.train)], y[list(s.train)])
        fits[s.group] = [round(v, 4) for v in model.weights]
        for n, p in zip(s.test, model.probability(x[list(s.test)]), strict=True):
            accepted[n] = bool(p >= 0.5)
    out = pm.summarise(items, accepted, 0.5)
    out["weights_by_held_out_source"] = {"features": [*FEATURES, "intercept"], **fits}
    out["protocol"] = (
        "logistic regression on the single-frame cue log-odds, fitted on all other sources "
        "(class-balanced), deciding the held-out source at p >= 0.5"
    )
    return out
