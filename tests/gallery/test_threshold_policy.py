"""The 1:N threshold follows the gallery: stranger_accept_rate, the fitted tail, the refusal floor."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from edge.config import Config
from edge.errors import ConfigError, GalleryError
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.gallery.thresholds import (
    ThresholdPolicy,
    per_comparison_fmr,
    read_calibrations,
    tail_threshold,
    threshold_for,
    threshold_policy,
)

DIM = 8


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_per_comparison_rate_divides_the_stranger_rate_among_templates() -> None:
    assert per_comparison_fmr(1e-3, 1) == pytest.approx(1e-3)
    assert per_comparison_fmr(1e-3, 1000) == pytest.approx(1.0005e-6, rel=1e-3)
    # The chance that a stranger passes any of N independent comparisons is the target again.
    fmr = per_comparison_fmr(1e-2, 250)
    assert 1 - (1 - fmr) ** 250 == pytest.approx(1e-2)


def test_committed_calibration_has_a_tail_and_a_floor(model_store) -> None:
    cal = read_calibrations()["edgeface_xxs_int8"]
    assert cal.tail_zeta > 0 and cal.min_fmr == pytest.approx(1e-7)
    # The tail joins the empirical curve at its root and keeps rising below it.
    assert tail_threshold(cal, cal.tail_zeta) == pytest.approx(cal.tail_u)
    ladder = [threshold_for(cal, f) for f in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)]
    assert ladder == sorted(ladder) and len(set(ladder)) == 5
    with pytest.raises(ConfigError, match="outside what edgeface_xxs_int8 was calibrated for"):
        threshold_for(cal, 1e-8)


def test_threshold_rises_as_the_gallery_grows_and_refuses_past_the_floor(model_store) -> None:
    policy = threshold_policy(Config(), model_store)
    small, fmr_small = policy.identify(10)
    large, fmr_large = policy.identify(5000)
    assert large > small and fmr_large < fmr_small
    assert policy.verify == pytest.approx(threshold_for(policy.calibration, Config().match.target_fmr))
    with pytest.raises(ConfigError, match="stranger_accept_rate: 0.001 over 20,000 templates"):
        policy.identify(20_000)  # 5e-8 per comparison: below the calibrated 1e-7
    fixed = threshold_policy(replace(Config(), match=replace(Config().match, threshold=0.6)), model_store)
    assert fixed.identify(10**6) == (0.6, None)


def test_gallery_moves_its_threshold_with_every_enroll_and_refuses_to_outgrow_it(tmp_path, model_store) -> None:
    cal = read_calibrations()["edgeface_xxs_int8"]
    # A floor close to the rate of a 3-template gallery: the fourth enrollment must be refused.
    policy = ThresholdPolicy(0.34, None, replace(cal, min_fmr=per_comparison_fmr(1e-3, 3) * 0.999), 1e-3)
    rng = np.random.default_rng(1)
    kek = os.urandom(32)
    with Gallery.open(tmp_path, kek, "toy", DIM, policy, create=True) as gallery:
        seen = [gallery.threshold]
        for n in range(3):
            gallery.enroll(PersonProfile(name=f"p{n}"), [_unit(rng)], [1.0])
            seen.append(gallery.threshold)
        assert seen == sorted(seen) and len(set(seen)) == 3  # an empty gallery answers like one of 1
        assert gallery.threshold_fmr == pytest.approx(per_comparison_fmr(1e-3, 3))
        with pytest.raises(GalleryError, match="not enrolled: match.stranger_accept_rate"):
            gallery.enroll(PersonProfile(name="p3"), [_unit(rng)], [1.0])
        assert len(gallery) == 3 and gallery.store.find("p3") is None  # nothing written
        gallery.remove("p2")
        assert gallery.threshold == pytest.approx(seen[2])
    # Reopened with a floor the gallery is already past: refused at open, not at the first stranger.
    tight = replace(policy, calibration=replace(cal, min_fmr=per_comparison_fmr(1e-3, 1)))
    with pytest.raises(ConfigError, match="2 templates"):
        Gallery.open(tmp_path, kek, "toy", DIM, tight)


def test_tail_fit_recovers_a_known_tail_on_held_out_draws() -> None:
    pytest.importorskip("scipy")
    from edge.eval.tail_fit import fit_tail, threshold_at

    rng = np.random.default_rng(7)
    # Scores: a bulk around 0 and a Pareto-like upper tail, 4 million draws, two independent halves.
    def draws(n: int) -> np.ndarray:
        return np.tanh(rng.standard_t(df=12, size=n) * 0.09)

    fit, held = draws(4_000_000), draws(4_000_000)
    tail = fit_tail(fit)
    for fmr in (1e-4, 1e-5):
        observed = float((held >= threshold_at(tail, fmr)).mean())
        assert fmr / 2 < observed < fmr * 2, (fmr, observed)
