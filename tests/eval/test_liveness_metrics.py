"""APCER / BPCER / ACER and threshold choice as ISO/IEC 30107-3 counts them."""

from __future__ import annotations

import numpy as np
import pytest

from edge.eval import pad_metrics as pm


def test_rates_count_accepted_attacks_and_rejected_live_faces() -> None:
    live = np.array([0.9, 0.8, 0.4, 0.95])
    spoof = np.array([0.1, 0.6, 0.2, 0.3, 0.05])
    apcer, bpcer = pm.rates(live, spoof, 0.5)
    assert apcer == pytest.approx(1 / 5) and bpcer == pytest.approx(1 / 4)


def test_threshold_at_apcer_accepts_at_most_the_target_share() -> None:
    spoof = np.linspace(0.0, 0.99, 100)
    for target in (0.0, 0.01, 0.05, 0.2):
        t = pm.threshold_at_apcer(spoof, target)
        assert (spoof >= t).mean() <= target + 1e-12
        # ...and is the lowest such threshold: the next attack down would be accepted.
        assert (spoof >= np.nextafter(t, -np.inf) - 0.0099).mean() > target


def test_threshold_min_acer_separates_separable_scores() -> None:
    live, spoof = np.array([0.7, 0.8, 0.9]), np.array([0.1, 0.2, 0.3])
    t = pm.threshold_min_acer(live, spoof)
    assert pm.rates(live, spoof, t) == (0.0, 0.0)


def test_cross_validation_never_sets_a_threshold_on_the_items_it_scores() -> None:
    # Group "b" alone would be perfectly separated at 0.55; trained on "a" only (threshold 0.35)
    # its held-out decisions must show the errors that threshold makes.
    items = [
        pm.Item("live", 0.4, source="a"), pm.Item("spoof", 0.3, source="a"),
        pm.Item("live", 0.6, source="b"), pm.Item("spoof", 0.5, source="b"),
    ]
    accepted, thresholds = pm.cross_validate(items, [i.source for i in items], pm.threshold_min_acer)
    assert thresholds[1] == pytest.approx(0.35)
    assert accepted[3] is True  # b's attack accepted: a's threshold is too low for b
    summary = pm.summarise(items, accepted, 0.0)
    assert summary["by_source"]["b"]["apcer"] == 1.0
    assert summary["apcer_by_attack_type"] == {"unspecified": 0.5}


def test_folds_are_stratified_by_label() -> None:
    items = [pm.Item("live", 0.0)] * 10 + [pm.Item("spoof", 0.0)] * 25
    folds = pm.folds_by_label(items, 5)
    for k in range(5):
        labels = [i.label for i, f in zip(items, folds, strict=True) if f == k]
        assert labels.count("live") == 2 and labels.count("spoof") == 5


def test_auc_counts_ties_half() -> None:
    assert pm.auc(np.array([1.0, 2.0]), np.array([0.0, 0.5])) == 1.0
    assert pm.auc(np.array([1.0]), np.array([1.0])) == 0.5
