"""`facegate eval liveness`: APCER / BPCER of presentation-attack detection, as the device decides.

Images (`--labels`, edge/eval/liveness_images.py): each image one presentation, photos through
the detector and the daemon's crop geometry, face crops as their own box, decided as a
one-frame track at the configured `[liveness]` threshold. Videos (`--videos`,
edge/eval/liveness_videos.py): each clip one track, and the same frames as 10-frame tracks.
Figures per source and per attack type, with 95 % intervals (edge/eval/pad_metrics.py).

`cross_validate` (images only) is the older protocol: the threshold fitted on held-out folds
and leave-one-source-out. It answers "how separable are these scores", not "what does a device
shipped today do", and is reported as such in `protocol`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from edge.config import Config
from edge.errors import FacegateError, LabelsError
from edge.eval import pad_metrics as pm
from edge.eval.liveness_common import read_all, read_labels
from edge.eval.liveness_images import run_images
from edge.eval.liveness_videos import run_videos

__all__ = ["calibration_toml", "read_labels", "run_eval", "run_images", "run_videos"]

CALIBRATION_APCERS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def calibration_toml(cfg: Config, items: list[pm.Item]) -> str:
    """`[liveness.<model>_<precision>]` thresholds per APCER from the spoof items' scores."""
    _, spoof = pm.split(items)
    usable = [a for a in CALIBRATION_APCERS if a * len(spoof) >= 1.0] or [max(CALIBRATION_APCERS)]
    thresholds = [pm.threshold_at_apcer(spoof, a) for a in usable]
    key = f"{cfg.liveness.model}_{cfg.liveness.precision}"
    return (
        "# Written by `facegate eval liveness --calibrate`: fused-score thresholds per target APCER,\n"
        f"# from {len(spoof)} attack items. Read by [liveness] target_apcer + calibration.\n\n"
        f"[liveness.{key}]\n"
        f"apcer = [{', '.join(repr(a) for a in usable)}]\n"
        f"threshold = [{', '.join(f'{t:.6f}' for t in thresholds)}]\n"
        f"n_spoof = {len(spoof)}\n"
    )


def run_eval(
    cfg: Config,
    labels_csv: Sequence[Path] | None,
    videos_csv: Sequence[Path] | None,
    root: Path | None,
    precision: str | None = None,
    model: str | None = None,
    report: Path | None = None,
    calibrate: Path | None = None,
    progress: bool = False,
    cross_validate: bool = False,
    calibrate_loso: bool = False,
) -> dict[str, object]:
    lv = replace(cfg.liveness, **{k: v for k, v in (("precision", precision), ("model", model)) if v})
    cfg = replace(cfg, liveness=lv)
    if bool(labels_csv) == bool(videos_csv):
        raise LabelsError("give exactly one of --labels CSV (face crops, photos) or --videos CSV")
    if labels_csv:
        summary, items = run_images(cfg, read_all(labels_csv, root), progress, cross_validate, calibrate_loso)
    else:
        if cross_validate or calibrate_loso:
            raise LabelsError("--cross-validate and --calibrate-loso apply to --labels (images) only")
        assert videos_csv is not None
        summary, items = run_videos(cfg, read_all(videos_csv, root), progress)
    if calibrate is not None:
        try:
            calibrate.write_text(calibration_toml(cfg, items), encoding="utf-8")
        except OSError as exc:
            raise FacegateError(f"{calibrate}: cannot write ({exc.strerror or exc})") from exc
        summary["calibration"] = str(calibrate)
    if report is not None:
        from edge.eval.liveness_report import write_report

        write_report(report, summary, items)
        summary["report"] = str(report)
    return summary
