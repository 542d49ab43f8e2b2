"""`facegate eval liveness`: APCER / BPCER on labelled face crops or labelled videos.

Crops (`--labels`): each crop is scored alone (passive CNN + glare + moiré; the multi-frame cues
need a track). The crops are tight face boxes, so the CNN sees them without the surroundings it
was trained with. A crop score has no runtime threshold to be judged at, so the threshold is
chosen on held-out data: stratified k-fold (each fold's threshold minimises ACER on the other
folds) for the headline figures, and leave-one-source-out as the harder check. BPCER at
APCER = 5 % uses thresholds set at 5 % APCER on the other folds the same way.

Videos (`--videos`): every frame goes through the perception core; the largest face is one
track fed to TrackLiveness, and the video is decided by `result().live` at the configured
threshold — exactly the runtime path, nothing fitted to the videos.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge.config import Config
from edge.errors import FacegateError, LabelsError
from edge.eval import pad_metrics as pm
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness.checker import Liveness, LivenessResult, fuse
from edge.perception.modelstore import ModelStore

LABELS = ("live", "spoof")
CV_FOLDS = 5
BPCER_AT_APCER = 0.05
WINDOW = 10  # face frames per track in the windowed video figures
CALIBRATION_APCERS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True, slots=True)
class Labelled:
    path: Path
    label: str
    attack_type: str
    source: str


def read_labels(csv_path: Path, root: Path | None) -> list[Labelled]:
    """Rows of a `file,label[,attack_type][,source]` CSV; files relative to `root` or the CSV."""
    base = root or csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise LabelsError(f"{csv_path}: cannot read ({exc.strerror or exc})") from exc
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise LabelsError(f"{csv_path}: needs a header with at least `file,label`")
    out = []
    for n, row in enumerate(rows, 2):
        label = (row.get("label") or "").strip()
        if label not in LABELS:
            raise LabelsError(f"{csv_path}:{n}: label must be live or spoof (got {label!r})")
        path = base / row["file"]
        if not path.is_file():
            raise LabelsError(f"{csv_path}:{n}: {path} does not exist")
        attack = (row.get("attack_type") or "").strip() if label == "spoof" else ""
        out.append(Labelled(path, label, attack, (row.get("source") or "").strip()))
    if not out:
        raise LabelsError(f"{csv_path}: no rows")
    return out


def _progress(enabled: bool) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if enabled and (done == total or done % 50 == 0):
            print(f"\r{done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return show


def _cue_means(items: list[pm.Item], cues: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    names = sorted({k for c in cues for k in c})
    out = {}
    for name in names:
        live = np.array([c[name] for c, i in zip(cues, items, strict=True) if i.label == "live" and name in c])
        spoof = np.array([c[name] for c, i in zip(cues, items, strict=True) if i.label == "spoof" and name in c])
        out[name] = {
            "auc": round(pm.auc(live, spoof), 4),
            "mean_live": round(float(live.mean()), 4) if live.size else None,
            "mean_spoof": round(float(spoof.mean()), 4) if spoof.size else None,
        }
    return out


def run_crops(cfg: Config, labels: list[Labelled], progress: bool = False) -> tuple[dict[str, object], list[pm.Item]]:
    if {i.label for i in labels} != set(LABELS):
        raise LabelsError("crops: thresholds are cross-validated, which needs both live and spoof rows")
    liveness = Liveness(cfg, ModelStore(Path(cfg.models.dir) if cfg.models.dir else None))
    items, cues = [], []
    show = _progress(progress)
    started = time.perf_counter()
    for n, row in enumerate(labels, 1):
        rgb = load_image(row.path)
        scores = liveness.frame_scores(rgb, (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])))
        cues.append(scores)
        items.append(pm.Item(row.label, fuse(scores), row.attack_type, row.source))
        show(n, len(labels))
    ms = (time.perf_counter() - started) * 1000.0 / len(labels)
    live, spoof = pm.split(items)
    folds = pm.folds_by_label(items, CV_FOLDS)
    accepted, fold_thresholds = pm.cross_validate(items, folds, pm.threshold_min_acer)
    summary = pm.summarise(items, accepted, pm.threshold_min_acer(live, spoof))
    at5, _ = pm.cross_validate(items, folds, lambda _l, s: pm.threshold_at_apcer(s, BPCER_AT_APCER))
    at5_summary = pm.summarise(items, at5, pm.threshold_at_apcer(spoof, BPCER_AT_APCER))
    summary["bpcer_at_apcer_5"] = at5_summary["bpcer"]
    summary["apcer_at_apcer_5"] = at5_summary["apcer"]
    summary["threshold_at_apcer_5"] = at5_summary["threshold"]
    summary["protocol"] = (
        f"crops scored alone (passive+glare+moire); threshold minimising ACER chosen on {CV_FOLDS - 1} "
        f"of {CV_FOLDS} stratified folds, decisions on the held-out fold, pooled; `threshold` = same rule on all items"
    )
    summary["fold_thresholds"] = [round(t, 6) for t in fold_thresholds]
    sources = [i.source for i in items]
    if len(set(sources)) > 1:
        loso, loso_t = pm.cross_validate(items, sources, pm.threshold_min_acer)
        s = pm.summarise(items, loso, float("nan"))
        summary["leave_one_source_out"] = {
            "apcer": s["apcer"], "bpcer": s["bpcer"], "acer": s["acer"], "by_source": s["by_source"],
            "thresholds": [round(t, 6) for t in loso_t],
        }
    summary["auc"] = round(pm.auc(live, spoof), 4)
    summary["cues"] = _cue_means(items, cues)
    summary.update(_model_facts(cfg, ms))
    return summary, items


def _model_facts(cfg: Config, ms: float) -> dict[str, object]:
    return {"model": cfg.liveness.model, "precision": cfg.liveness.precision, "ms_per_item": round(ms, 2)}


def track_video(
    perception: Perception, liveness: Liveness, path: Path, window: int
) -> tuple[LivenessResult, list[LivenessResult]]:
    """The video's largest face per frame as one track through TrackLiveness, and the same
    frames cut into consecutive tracks of `window` face frames (the runtime decides a track
    after a few hundred ms, so each window is one such decision)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise LabelsError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    track, part, parts = liveness.new_track(), liveness.new_track(), []
    n = used = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = perception.faces(rgb, embed=False)  # largest first
            if faces:
                track.add(rgb, faces[0], n / fps)
                part.add(rgb, faces[0], n / fps)
                used += 1
                if used % window == 0:
                    parts.append(part.result())
                    part = liveness.new_track()
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise LabelsError(f"{path}: no frame could be decoded")
    return track.result(), parts


def run_videos(
    cfg: Config, labels: list[Labelled], progress: bool = False, window: int = WINDOW
) -> tuple[dict[str, object], list[pm.Item]]:
    # The embedder is not needed for liveness; skip loading it.
    perception = Perception(cfg, with_embedder=False)
    liveness = Liveness(cfg, perception.store)
    items, accepted, per_video = [], [], []
    win_items, win_accepted = [], []
    started = time.perf_counter()
    for n, row in enumerate(labels, 1):
        result, parts = track_video(perception, liveness, row.path, window)
        items.append(pm.Item(row.label, result.score, row.attack_type, row.source))
        accepted.append(result.live)
        for part in parts:
            win_items.append(pm.Item(row.label, part.score, row.attack_type, row.source))
            win_accepted.append(part.live)
        per_video.append({
            "file": str(row.path), "label": row.label, "decision": "live" if result.live else "spoof",
            **result.to_dict(),
            "windows": len(parts), "windows_live": sum(p.live for p in parts),
            "window_score_min": round(min((p.score for p in parts), default=float("nan")), 4),
            "window_score_max": round(max((p.score for p in parts), default=float("nan")), 4),
        })
        _progress(progress)(n, len(labels))
    summary = pm.summarise(items, accepted, liveness.threshold)
    summary["protocol"] = (
        "one track per video (largest face per frame) decided at the configured threshold, nothing fitted; "
        f"`windows`: the same frames as consecutive {window}-frame tracks"
    )
    w = pm.summarise(win_items, win_accepted, liveness.threshold)
    summary["windows"] = {k: w[k] for k in ("apcer", "bpcer", "acer", "n_live", "n_spoof", "apcer_by_attack_type")}
    summary["windows"]["frames_per_window"] = window
    summary["videos"] = per_video
    summary.update(_model_facts(cfg, (time.perf_counter() - started) * 1000.0 / len(labels)))
    return summary, items + win_items


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
    labels_csv: Path | None,
    videos_csv: Path | None,
    root: Path | None,
    precision: str | None = None,
    model: str | None = None,
    report: Path | None = None,
    calibrate: Path | None = None,
    progress: bool = False,
) -> dict[str, object]:
    lv = replace(cfg.liveness, **{k: v for k, v in (("precision", precision), ("model", model)) if v})
    cfg = replace(cfg, liveness=lv)
    if (labels_csv is None) == (videos_csv is None):
        raise LabelsError("give exactly one of --labels CSV (face crops) or --videos CSV")
    if labels_csv is not None:
        summary, items = run_crops(cfg, read_labels(labels_csv, root), progress)
    else:
        assert videos_csv is not None
        summary, items = run_videos(cfg, read_labels(videos_csv, root), progress)
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
