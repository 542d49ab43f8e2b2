"""Open-set thresholds from a target false-match rate, calibrated on LFW impostor scores.

A door is configured by risk, not by a cosine value: `[match] target_fmr = 1e-4` means "at most
one in ten thousand comparisons with a stranger scores as a match". The cosine threshold that
gives it depends on the embedder and its precision, so `facegate eval lfw --calibrate FILE`
scores every cross-identity pair of the LFW images (≈ 7 million pairs for folds 1–5, enough
for FMR down to 1e-6) and writes the threshold at each FMR decade, keyed by model version.
`models/thresholds.toml` is that file, committed; a model whose version differs from the
calibrated one is refused rather than given a threshold that no longer means what it says.

In 1:N identification each probe is compared with N people, so the chance that a stranger
matches someone is about N × FMR (the FPIR): a 1,000-person gallery at FMR 1e-4 lets ~10 % of
strangers match somebody at the threshold alone — decisions add votes over frames on top.

That is why the 1:N threshold follows the gallery (`ThresholdPolicy`): `[match]
stranger_accept_rate` (default 1e-3) is the share of strangers' probes that may match anyone,
so each of the gallery's T templates may let through 1 − (1 − rate)^(1/T) ≈ rate / T of them,
and the threshold is the calibrated one at that per-comparison rate — recomputed at open, at every
reload and after every enroll or removal. At 10,000 templates that is 1e-7, below what any pair
count measures directly: there the calibration's upper tail, fitted as a generalised Pareto
distribution (edge/eval/tail_fit.py), gives the threshold, down to the file's `min_fmr` and never
below it. `target_fmr` stays the rate of 1:1 verification (a card or PIN chose the person).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.errors import ConfigError
from edge.perception.modelstore import ModelStore

FMR_POINTS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "models" / "thresholds.toml"


@dataclass(frozen=True, slots=True)
class Calibration:
    model: str  # manifest name, e.g. "edgeface_xxs_int8"
    model_version: str  # source checksum + recipe; see models.build.model_version
    n_impostor: int
    n_genuine: int
    fmr: tuple[float, ...]
    threshold: tuple[float, ...]
    fnmr: tuple[float, ...]  # genuine pairs rejected at each threshold
    # Upper tail above `tail_u` (a share `tail_zeta` of the impostor scores) as a generalised
    # Pareto distribution of shape `tail_xi` and scale `tail_sigma`; tail_zeta 0 = no tail fit.
    tail_u: float = 0.0
    tail_zeta: float = 0.0
    tail_xi: float = 0.0
    tail_sigma: float = 0.0
    min_fmr: float = 0.0  # the lowest rate the file stands behind (0 = the lowest of `fmr`)
    sources: str = ""  # what the impostor pairs came from

    @property
    def lowest_fmr(self) -> float:
        return self.min_fmr if self.tail_zeta > 0 and self.min_fmr > 0 else min(self.fmr)

    def to_toml(self) -> str:
        def floats(values: tuple[float, ...]) -> str:
            return "[" + ", ".join(repr(float(v)) for v in values) + "]"

        return (
            f"[{self.model}]\n"
            f'model_version = "{self.model_version}"\n'
            f"n_impostor = {self.n_impostor}\n"
            f"n_genuine = {self.n_genuine}\n"
            f"fmr = {floats(self.fmr)}\n"
            f"threshold = {floats(self.threshold)}\n"
            f"fnmr = {floats(self.fnmr)}\n"
            + (
                f"tail_u = {self.tail_u!r}\ntail_zeta = {self.tail_zeta!r}\ntail_xi = {self.tail_xi!r}\n"
                f"tail_sigma = {self.tail_sigma!r}\nmin_fmr = {self.min_fmr!r}\nsources = \"{self.sources}\"\n"
                if self.tail_zeta > 0
                else ""
            )
        )


def empirical_ladder(impostor: np.ndarray, genuine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(fmr, threshold, fnmr) at each FMR_POINTS rate the impostor pairs can measure."""
    impostor = np.sort(impostor)[::-1]
    fmrs, thresholds, fnmrs = [], [], []
    for fmr in FMR_POINTS:
        allowed = int(math.floor(fmr * impostor.size))
        if allowed < 1:
            break  # not enough impostor pairs to measure this rate
        # Accept when score >= threshold; put the threshold just above the (allowed+1)-th
        # highest impostor score so at most `allowed` impostors pass.
        threshold = float(np.nextafter(np.float32(impostor[allowed]), np.float32(np.inf)))
        fmrs.append(fmr)
        thresholds.append(threshold)
        fnmrs.append(float((genuine < threshold).mean()) if genuine.size else float("nan"))
    return tuple(fmrs), tuple(thresholds), tuple(fnmrs)


def calibrate(
    model: str, model_version: str, vectors: np.ndarray, identities: list[str]
) -> Calibration:
    """Thresholds at FMR_POINTS from all pairs of `vectors` (rows L2-normalised)."""
    ids = np.unique(np.asarray(identities), return_inverse=True)[1]
    scores = vectors @ vectors.T
    upper = np.triu(np.ones(scores.shape, dtype=bool), k=1)
    same = ids[:, None] == ids[None, :]
    impostor, genuine = scores[upper & ~same], scores[upper & same]
    return Calibration(model, model_version, int(impostor.size), int(genuine.size), *empirical_ladder(impostor, genuine))


def write_calibrations(path: Path, calibrations: dict[str, Calibration]) -> None:
    header = (
        "# Written by `facegate eval lfw --calibrate`; thresholds (cosine) at each false-match\n"
        "# rate, from all cross-identity pairs of the LFW images. Read by [match] target_fmr.\n\n"
    )
    path.write_text(header + "\n".join(c.to_toml() for _, c in sorted(calibrations.items())), encoding="utf-8")


def read_calibrations(path: Path = DEFAULT_FILE) -> dict[str, Calibration]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return {
            name: Calibration(
                name,
                str(t["model_version"]),
                int(t["n_impostor"]),
                int(t["n_genuine"]),
                tuple(float(v) for v in t["fmr"]),
                tuple(float(v) for v in t["threshold"]),
                tuple(float(v) for v in t["fnmr"]),
                **{k: float(t[k]) for k in ("tail_u", "tail_zeta", "tail_xi", "tail_sigma", "min_fmr") if k in t},
                sources=str(t.get("sources", "")),
            )
            for name, t in data.items()
        }
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable threshold calibration ({exc})") from exc


def tail_threshold(cal: Calibration, fmr: float) -> float:
    """The score a share `fmr` of impostors exceeds, from the fitted generalised Pareto tail."""
    ratio = fmr / cal.tail_zeta
    if abs(cal.tail_xi) < 1e-9:
        return cal.tail_u - cal.tail_sigma * math.log(ratio)
    return cal.tail_u + cal.tail_sigma / cal.tail_xi * (ratio ** (-cal.tail_xi) - 1.0)


def threshold_for(cal: Calibration, target_fmr: float, key: str = "match.target_fmr") -> float:
    """Threshold at `target_fmr`: from the fitted tail below `tail_zeta`, else log-linear between
    calibrated decades; never below the lowest rate the calibration stands behind."""
    lo, hi = cal.lowest_fmr, max(cal.fmr)
    if not lo <= target_fmr <= hi:
        raise ConfigError(
            f"{key}: {target_fmr:g} is outside what {cal.model} was calibrated for "
            f"({lo:g} … {hi:g}, from {cal.n_impostor:,} impostor pairs)"
        )
    if cal.tail_zeta > 0 and target_fmr <= cal.tail_zeta:
        return tail_threshold(cal, target_fmr)
    logs = np.log10(np.asarray(cal.fmr))
    # np.interp needs increasing x: FMR falls as the threshold rises.
    return float(np.interp(math.log10(target_fmr), logs[::-1], np.asarray(cal.threshold)[::-1]))


def _calibration_for(cfg: Config, store: ModelStore, calibration_file: Path) -> Calibration:
    name = f"{cfg.embed.model}_{cfg.embed.precision}"
    cal = read_calibrations(calibration_file).get(name)
    if cal is None:
        raise ConfigError(
            f"match.target_fmr: no calibration for {name} in {calibration_file}; run "
            "`facegate eval lfw --calibrate` or set [match] threshold"
        )
    built = store.record(name).version
    if cal.model_version != built:
        raise ConfigError(
            f"match.target_fmr: {calibration_file} was calibrated for {name} version "
            f"{cal.model_version}, but the built model is {built}; re-run `facegate eval lfw --calibrate`"
        )
    return cal


def per_comparison_fmr(stranger_accept_rate: float, templates: int) -> float:
    """The per-template rate that lets a stranger match any of `templates` with the given chance.

    Templates, not persons: a person's score is the best of their templates, so each template is
    one more chance for a stranger. (Treating them as independent chances is conservative, since
    one person's templates look alike.)"""
    return -math.expm1(math.log1p(-stranger_accept_rate) / max(templates, 1))


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """How the gallery's thresholds are set: fixed (`[match] threshold`), or from the calibration,
    the 1:N one following the gallery's size."""

    verify: float  # 1:1 threshold: `target_fmr` (or the fixed threshold)
    fixed: float | None = None  # `[match] threshold`: the 1:N threshold whatever the gallery holds
    calibration: Calibration | None = None
    stranger_accept_rate: float | None = None

    @classmethod
    def fixed_at(cls, threshold: float) -> ThresholdPolicy:
        return cls(verify=threshold, fixed=threshold)

    def identify(self, templates: int) -> tuple[float, float | None]:
        """(the 1:N threshold, the per-comparison rate it is set at; None when fixed) for a gallery
        of `templates` templates; ConfigError when that rate is below what the calibration holds."""
        if self.fixed is not None or self.calibration is None or self.stranger_accept_rate is None:
            return (self.verify if self.fixed is None else self.fixed), None
        fmr = per_comparison_fmr(self.stranger_accept_rate, templates)
        cal = self.calibration
        if fmr < cal.lowest_fmr:
            raise ConfigError(
                f"match.stranger_accept_rate: {self.stranger_accept_rate:g} over {templates:,} templates needs a "
                f"per-comparison false-match rate of {fmr:.2g}, below the lowest {cal.model} is calibrated for "
                f"({cal.lowest_fmr:g}); raise stranger_accept_rate, use card_and_face doors (1:1), or set "
                "[match] threshold explicitly"
            )
        return threshold_for(cal, min(fmr, max(cal.fmr)), "match.stranger_accept_rate"), fmr


def threshold_policy(cfg: Config, store: ModelStore, calibration_file: Path = DEFAULT_FILE) -> ThresholdPolicy:
    """The thresholds `[match]` asks for (docs/config.md)."""
    if cfg.match.threshold != 0.0:
        return ThresholdPolicy.fixed_at(cfg.match.threshold)
    cal = _calibration_for(cfg, store, calibration_file)
    return ThresholdPolicy(threshold_for(cal, cfg.match.target_fmr), None, cal, cfg.match.stranger_accept_rate)


def match_threshold(cfg: Config, store: ModelStore, calibration_file: Path = DEFAULT_FILE) -> float:
    """The configured `[match] threshold`, else the calibrated 1:1 one for `target_fmr`."""
    if cfg.match.threshold != 0.0:
        return cfg.match.threshold
    return threshold_for(_calibration_for(cfg, store, calibration_file), cfg.match.target_fmr)
