from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.config import Config
from edge.errors import ConfigError
from edge.gallery.thresholds import (
    Calibration,
    calibrate,
    match_threshold,
    read_calibrations,
    threshold_for,
    write_calibrations,
)


def _calibration() -> Calibration:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((400, 64))
    vectors = np.repeat(centres, 3, axis=0) + 0.6 * rng.standard_normal((1200, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return calibrate("toy_fp32", "abc-r1", vectors.astype(np.float32), [str(i // 3) for i in range(1200)])


def test_threshold_keeps_impostor_matches_at_the_target_rate() -> None:
    cal = _calibration()
    assert cal.n_genuine == 1200 and cal.n_impostor == 1200 * 1199 // 2 - 1200
    assert list(cal.threshold) == sorted(cal.threshold)  # stricter rate, higher threshold
    assert list(cal.fnmr) == sorted(cal.fnmr)
    assert cal.fmr[-1] >= 1.0 / cal.n_impostor  # never a rate the pairs cannot measure


def test_interpolation_and_refusal_outside_the_calibrated_range() -> None:
    cal = _calibration()
    lo, hi = cal.threshold[0], cal.threshold[1]
    mid = threshold_for(cal, 10 ** ((np.log10(cal.fmr[0]) + np.log10(cal.fmr[1])) / 2))
    assert lo < mid < hi
    assert threshold_for(cal, cal.fmr[1]) == pytest.approx(cal.threshold[1])
    with pytest.raises(ConfigError, match="outside what toy_fp32 was calibrated for"):
        threshold_for(cal, cal.fmr[-1] / 10)


def test_round_trip_and_model_version_check(tmp_path, model_store) -> None:
    path = tmp_path / "t.toml"
    write_calibrations(path, {"toy_fp32": _calibration()})
    assert read_calibrations(path)["toy_fp32"] == _calibration()
    cfg = Config()
    name = f"{cfg.embed.model}_{cfg.embed.precision}"
    stale = replace(_calibration(), model=name, model_version="000000000000-r0")
    write_calibrations(path, {name: stale})
    with pytest.raises(ConfigError, match="re-run `facegate eval lfw --calibrate`"):
        match_threshold(cfg, model_store, path)
    explicit = replace(cfg, match=replace(cfg.match, threshold=0.5))
    assert match_threshold(explicit, model_store, path) == 0.5


def test_committed_calibration_covers_every_built_embedder(model_store) -> None:
    cals = read_calibrations()
    for model in ("edgeface_xxs", "edgeface_xs", "dlib_resnet"):
        for precision in ("int8", "fp32"):
            name = f"{model}_{precision}"
            assert cals[name].model_version == model_store.record(name).version
            assert cals[name].n_impostor > 7_000_000
