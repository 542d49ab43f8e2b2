"""APCER / BPCER / ACER, their 95 % intervals, held-out splits and threshold choice as
ISO/IEC 30107-3 counts them."""

from __future__ import annotations

import numpy as np
import pytest

from edge.eval import pad_metrics as pm
from edge.eval.liveness_images import PHOTO_MAX_FACE_AREA, image_kind
from edge.eval.pad_calibration import fit_logistic, loso_logistic


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
    assert summary["apcer_by_attack_type"]["unspecified"]["apcer"] == 0.5


def test_folds_are_stratified_by_label() -> None:
    items = [pm.Item("live", 0.0)] * 10 + [pm.Item("spoof", 0.0)] * 25
    folds = pm.folds_by_label(items, 5)
    for k in range(5):
        labels = [i.label for i, f in zip(items, folds, strict=True) if f == k]
        assert labels.count("live") == 2 and labels.count("spoof") == 5


def test_auc_counts_ties_half() -> None:
    assert pm.auc(np.array([1.0, 2.0]), np.array([0.0, 0.5])) == 1.0
    assert pm.auc(np.array([1.0]), np.array([1.0])) == 0.5


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe (1998), table I: 5/10 and 1/29 (method 3, Wilson score without correction).
    lo, hi = pm.Proportion(5, 10).interval()
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = pm.Proportion(1, 29).interval()
    assert (lo, hi) == (pytest.approx(0.0061, abs=1e-4), pytest.approx(0.1718, abs=1e-4))


def test_zero_errors_still_give_an_upper_bound_that_shrinks_with_count() -> None:
    # 0 of 8 proves little: up to z²/(n+z²) = 32 %; 0 of 800 bounds it under 0.5 %.
    small, large = pm.Proportion(0, 8).interval(), pm.Proportion(0, 800).interval()
    assert small[0] == 0.0 and small[1] == pytest.approx(pm.Z95**2 / (8 + pm.Z95**2))
    assert large[1] < 0.005
    assert pm.Proportion(8, 8).interval()[1] == 1.0
    assert pm.Proportion(0, 0).interval() is None and pm.Proportion(0, 0).rate is None


def test_acer_interval_contains_acer_and_combines_both_widths() -> None:
    rates = pm.ErrorRates(apcer=pm.Proportion(2, 40), bpcer=pm.Proportion(6, 30))
    lo, hi = rates.acer_interval()
    assert rates.acer == pytest.approx((2 / 40 + 6 / 30) / 2)
    assert lo < rates.acer < hi
    # MOVER: each side is the root-sum-square of the two one-sided distances, halved.
    (alo, ahi), (blo, bhi) = rates.apcer.interval(), rates.bpcer.interval()
    assert hi - rates.acer == pytest.approx(np.hypot(ahi - 2 / 40, bhi - 6 / 30) / 2)
    assert rates.acer - lo == pytest.approx(np.hypot(2 / 40 - alo, 6 / 30 - blo) / 2)
    both_zero = pm.ErrorRates(pm.Proportion(0, 10), pm.Proportion(0, 10))
    assert both_zero.acer_interval()[0] == 0.0 and both_zero.acer_interval()[1] > 0.1


def test_summary_breaks_down_by_source_and_attack_type_with_counts() -> None:
    items = [
        pm.Item("spoof", 0.9, "print", "a"), pm.Item("spoof", 0.1, "print", "a"), pm.Item("spoof", 0.1, "replay", "a"),
        pm.Item("live", 0.9, "", "a"), pm.Item("live", 0.2, "", "b"), pm.Item("spoof", 0.8, "replay", "b"),
    ]
    accepted = [i.score >= 0.5 for i in items]
    s = pm.summarise(items, accepted, 0.5)
    assert (s["n_live"], s["n_spoof"], s["spoof_accepted"], s["live_rejected"]) == (2, 4, 2, 1)
    assert s["apcer_by_attack_type"]["print"]["apcer"] == 0.5 and s["apcer_by_attack_type"]["replay"]["n"] == 2
    assert s["apcer_worst_attack_type"] == 0.5
    a, b = s["by_source"]["a"], s["by_source"]["b"]
    assert a["apcer"] == pytest.approx(1 / 3, abs=1e-4) and a["bpcer"] == 0.0 and a["acer"] == pytest.approx(1 / 6, abs=1e-4)
    assert a["apcer_by_attack_type"]["replay"]["apcer"] == 0.0 and a["apcer_by_attack_type"]["print"]["accepted"] == 1
    assert b["apcer"] == 1.0 and b["bpcer"] == 1.0 and b["apcer_ci95"][1] == 1.0
    for figures in (s, a, b):
        for key in ("apcer", "bpcer", "acer"):
            lo, hi = figures[f"{key}_ci95"]
            assert lo <= figures[key] <= hi


def test_held_out_splits_leave_each_group_out_exactly_once() -> None:
    groups = ["a", "b", "a", "c", "b", "a"]
    splits = pm.held_out_splits(groups)
    assert [s.group for s in splits] == ["a", "b", "c"]
    for s in splits:
        assert set(s.train).isdisjoint(s.test) and sorted(s.train + s.test) == list(range(len(groups)))
        assert {groups[n] for n in s.test} == {s.group} and s.group not in {groups[n] for n in s.train}
    with pytest.raises(ValueError, match="two groups"):
        pm.held_out_splits(["a", "a"])


def test_logistic_fusion_is_only_judged_on_sources_it_never_saw() -> None:
    # Sources a and b: live faces have a high passive score. Source c reverses that, so a fit
    # that had seen c would do better on it; held out, every one of c's decisions is wrong.
    def cues(p: float) -> dict[str, float]:
        return {"passive": p, "glare": 0.5, "moire": 0.5}

    rows = [(s, "live", 0.9) for s in "ab" for _ in range(5)] + [(s, "spoof", 0.1) for s in "ab" for _ in range(5)]
    rows += [("c", "live", 0.1)] * 3 + [("c", "spoof", 0.9)] * 3
    items = [pm.Item(label, 0.0, "", source) for source, label, _ in rows]
    out = loso_logistic(items, [cues(p) for _, _, p in rows])
    assert out["by_source"]["c"]["apcer"] == 1.0 and out["by_source"]["c"]["bpcer"] == 1.0
    assert out["by_source"]["a"]["acer"] == 0.0 and set(out["weights_by_held_out_source"]) == {"features", "a", "b", "c"}
    model = fit_logistic(np.array([[2.0, 0, 0], [-2.0, 0, 0]]), np.array([1, 0]))
    assert model.weights[0] > 0 and model.probability(np.array([[2.0, 0, 0]]))[0] > 0.5


def test_image_kind_rule_photo_only_with_room_around_the_face() -> None:
    shape = (400, 400, 3)
    side = 400 * PHOTO_MAX_FACE_AREA**0.5
    small = (0.0, 0.0, side - 1, side - 1)  # just under the largest face a photo may have
    large = (0.0, 0.0, side + 2, side + 2)  # a face crop's detection fills most of the image
    assert image_kind("", shape, small) == "photo"
    assert image_kind("", shape, large) == "crop"
    assert image_kind("", shape, None) == "crop"  # no face found in a tight crop: the whole image is the box
    assert image_kind("photo", shape, large) == "photo" and image_kind("photo", shape, None) == "no_face"
    assert image_kind("crop", shape, small) == "crop"


def test_presentations_without_a_decision_are_non_responses_not_errors() -> None:
    items = [pm.Item("live", 0.0, "", "a"), pm.Item("live", 0.0, "", "b"), pm.Item("spoof", 0.0, "", "b")]
    out = pm.non_response(items, [True, False, True])
    assert out["bpnrr"]["no_response"] == 1 and out["bpnrr"]["rate"] == 0.5 and out["apnrr"]["rate"] == 0.0
    assert set(out["by_source"]) == {"b"} and out["by_source"]["b"]["bpnrr"]["n"] == 1
