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
        )


def calibrate(
    model: str, model_version: str, vectors: np.ndarray, identities: list[str]
) -> Calibration:
    """Thresholds at FMR_POINTS from all pairs of `vectors` (rows L2-normalised)."""
    ids = np.unique(np.asarray(identities), return_inverse=True)[1]
    scores = vectors @ vectors.T
    upper = np.triu(np.ones(scores.shape, dtype=bool), k=1)
    same = ids[:, None] == ids[None, :]
    impostor = np.sort(scores[upper & ~same])[::-1]
    genuine = scores[upper & same]
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
    return Calibration(model, model_version, int(impostor.size), int(genuine.size), tuple(fmrs), tuple(thresholds), tuple(fnmrs))


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
            )
            for name, t in data.items()
        }
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable threshold calibration ({exc})") from exc


def threshold_for(cal: Calibration, target_fmr: float) -> float:
    """Threshold at `target_fmr`, log-linear between calibrated decades; never extrapolated."""
    lo, hi = min(cal.fmr), max(cal.fmr)
    if not lo <= target_fmr <= hi:
        raise ConfigError(
            f"match.target_fmr: {target_fmr:g} is outside what {cal.model} was calibrated for "
            f"({lo:g} … {hi:g}, from {cal.n_impostor:,} impostor pairs)"
        )
    logs = np.log10(np.asarray(cal.fmr))
    # np.interp needs increasing x: FMR falls as the threshold rises.
    return float(np.interp(math.log10(target_fmr), logs[::-1], np.asarray(cal.threshold)[::-1]))


def match_threshold(cfg: Config, store: ModelStore, calibration_file: Path = DEFAULT_FILE) -> float:
    """The configured `[match] threshold`, else the calibrated one for `target_fmr`."""
    if cfg.match.threshold != 0.0:
        return cfg.match.threshold
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
    return threshold_for(cal, cfg.match.target_fmr)
