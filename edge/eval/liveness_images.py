"""`facegate eval liveness --labels`: still images decided as the device decides them.

Each image is one presentation, decided as a one-frame track (`TrackLiveness`, `result().live`)
at the configured `[liveness]` threshold — the same fusion, re-check by the second model and
challenge as the daemon; nothing is fitted to the images. With `cross_validate` the old
protocol instead fits the threshold on the single-frame fused score (stratified folds, and
leave-one-source-out), which flatters the figures and is not what a device does.

Which geometry an image gets (the rule, in this order):
1. a `kind` column in the CSV (`crop` | `photo`) decides;
2. else the detector runs on the image as the daemon runs it (BlazeFace + FaceMesh,
   `Perception.faces`): when the largest face's box covers at most PHOTO_MAX_FACE_AREA of the
   image, it is a photo (a whole picture with surroundings around the face);
3. else — a bigger face, or none found — it is a face crop (e.g. the SSD boxes of the
   PyImageSearch-recipe sources) and the whole image is the face box.
A photo goes through the daemon's path: the detected box, the CNN's context crop around it
(edge/perception/liveness/model.py: the box enlarged 4.0× for V1SE, shrunk to fit), the pixel
cues on that box, `TrackLiveness.add`. A crop goes through `TrackLiveness.add_still` with the
whole image as box. A declared photo in which no face is found gets no decision on a device:
it is a non-response (`kind` no_face), kept out of APCER / BPCER and counted in ISO/IEC
30107-3's BPNRR / APNRR (`non_response`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from edge.config import Config
from edge.errors import LabelsError
from edge.eval import pad_metrics as pm
from edge.eval.liveness_common import Labelled, cue_means, model_facts, progress
from edge.eval.pad_calibration import loso_logistic
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness.checker import Liveness, LivenessResult, fuse

# Read from the geometry of the data, not from any score: BlazeFace's box covers at least 45 %
# of every labelled crop (SSD face boxes; 10th percentile 66-81 % per source) and 1-70 % of the
# CelebA-Spoof photos (median 14 %, 9 of 263 above 40 %). At 40 % a photo still has 1.6× the
# face's width and height around it for the CNN's context.
PHOTO_MAX_FACE_AREA = 0.4
CV_FOLDS = 5
BPCER_AT_APCER = 0.05
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Judged:
    row: Labelled
    kind: str  # "crop" | "photo" | "no_face"
    box: Box | None
    result: LivenessResult | None  # None for no_face
    frame_cues: dict[str, float]  # the single-frame cues before any re-check (CV, calibration)

    @property
    def live(self) -> bool:
        return self.result is not None and self.result.live


def image_kind(declared: str, shape: tuple[int, ...], face_box: Box | None) -> str:
    """crop | photo | no_face by the rule in the module docstring (`face_box`: the largest
    detected face, None when the detector found none)."""
    if declared == "crop":
        return "crop"
    if face_box is None:
        return "no_face" if declared == "photo" else "crop"
    if declared == "photo":
        return "photo"
    x1, y1, x2, y2 = face_box
    share = max(x2 - x1, 0.0) * max(y2 - y1, 0.0) / float(shape[0] * shape[1])
    return "photo" if share <= PHOTO_MAX_FACE_AREA else "crop"


def judge(perception: Perception, liveness: Liveness, row: Labelled) -> Judged:
    """One image decided as a one-frame track, by the geometry `image_kind` picks."""
    rgb = load_image(row.path)
    face = None
    if row.kind != "crop":
        faces = perception.faces(rgb, embed=False)  # largest first
        face = faces[0] if faces else None
    kind = image_kind(row.kind, rgb.shape, face.detection.box if face else None)
    if kind == "no_face":
        return Judged(row, kind, None, None, {})
    track = liveness.new_track()
    if kind == "photo":
        assert face is not None
        box = face.detection.box
        track.add(rgb, face, 0.0)
    else:
        box = (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
        track.add_still(rgb, box)
    return Judged(row, kind, box, track.result(), liveness.frame_scores(rgb, box))


def _kinds(judged: list[Judged]) -> dict[str, dict[str, int]]:
    out: dict[str, Counter[str]] = {}
    for j in judged:
        out.setdefault(j.row.source or "-", Counter())[j.kind] += 1
    return {s: dict(c) for s, c in sorted(out.items())}


def run_images(
    cfg: Config, labels: list[Labelled], show: bool = False, cross_validate: bool = False, calibrate_loso: bool = False,
) -> tuple[dict[str, object], list[pm.Item]]:
    if {i.label for i in labels} != {"live", "spoof"}:
        raise LabelsError("images: APCER and BPCER need both live and spoof rows")
    # The embedder is not needed for liveness; the detector and FaceMesh are (photos).
    perception = Perception(cfg, with_embedder=False)
    liveness = Liveness(cfg, perception.store)
    judged, tick = [], progress(show)
    started = time.perf_counter()
    for n, row in enumerate(labels, 1):
        judged.append(judge(perception, liveness, row))
        tick(n, len(labels))
    ms = (time.perf_counter() - started) * 1000.0 / len(labels)
    kinds = _kinds(judged)
    every = [pm.Item(j.row.label, 0.0, j.row.attack_type, j.row.source) for j in judged]
    responses = pm.non_response(every, [j.result is not None for j in judged])
    judged = [j for j in judged if j.result is not None]
    if cross_validate:
        items = [pm.Item(j.row.label, fuse(j.frame_cues), j.row.attack_type, j.row.source) for j in judged]
        summary = _held_out(lambda: _cross_validated(items))
        cues = [j.frame_cues for j in judged]
    else:
        items = [pm.Item(j.row.label, j.result.score, j.row.attack_type, j.row.source) for j in judged if j.result]
        summary = _as_device(items, [j.live for j in judged], liveness.threshold)
        cues = [dict(j.result.cues) if j.result else {} for j in judged]
    summary["kinds"] = kinds
    summary["non_response"] = responses
    summary["photo_max_face_area"] = PHOTO_MAX_FACE_AREA
    live, spoof = pm.split(items)
    summary["auc"] = round(pm.auc(live, spoof), 4)
    summary["cues"] = cue_means(items, cues)
    if calibrate_loso and len({i.source for i in items}) > 1:
        summary["calibrated_leave_one_source_out"] = _held_out(lambda: loso_logistic(items, [j.frame_cues for j in judged]))
    summary.update(model_facts(cfg, ms))
    return summary, items


def _held_out(evaluate: Callable[[], dict[str, object]]) -> dict[str, object]:
    """A held-out fit whose training side lacks a class is a labelling problem: say so."""
    try:
        return evaluate()
    except ValueError as exc:
        raise LabelsError(f"held-out fit: {exc} (every source needs live and spoof rows elsewhere)") from exc


def _as_device(items: list[pm.Item], accepted: list[bool], threshold: float) -> dict[str, object]:
    summary = pm.summarise(items, accepted, threshold)
    summary["protocol"] = (
        "device: each image one presentation, decided as a one-frame track (fusion, second-model re-check, "
        "challenge) at the configured [liveness] threshold; nothing fitted; photos through the detector and "
        f"the daemon's context crop, face crops as the whole box (face box <= {PHOTO_MAX_FACE_AREA:.0%} of the image "
        "= photo, or the CSV's `kind`); 95 % Wilson intervals (ACER: MOVER)"
    )
    by_source = summary["by_source"]
    assert isinstance(by_source, dict)
    acers = [v["acer"] for v in by_source.values() if v["acer"] is not None]
    # Nothing is fitted, so every source is already held out: leave-one-source-out is the
    # per-source table, and its pooled figure is the overall one.
    summary["leave_one_source_out"] = {
        "fitted": "nothing (shipped configuration)", "acer": summary["acer"], "acer_ci95": summary["acer_ci95"],
        "worst_source_acer": max(acers) if acers else None,
    }
    return summary


def _cross_validated(items: list[pm.Item]) -> dict[str, object]:
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
        f"cross-validated: single-frame fused score (passive+glare+moire, no re-check); threshold minimising ACER "
        f"chosen on {CV_FOLDS - 1} of {CV_FOLDS} stratified folds, decisions on the held-out fold, pooled; "
        "`threshold` = same rule on all items; leave_one_source_out: threshold from the other sources"
    )
    summary["fold_thresholds"] = [round(t, 6) for t in fold_thresholds]
    sources = [i.source for i in items]
    if len(set(sources)) > 1:
        loso, loso_t = pm.cross_validate(items, sources, pm.threshold_min_acer)
        s = pm.summarise(items, loso, float("nan"))
        summary["leave_one_source_out"] = {
            "fitted": "threshold minimising ACER on the other sources",
            **{k: s[k] for k in ("apcer", "apcer_ci95", "bpcer", "bpcer_ci95", "acer", "acer_ci95", "by_source")},
            "thresholds": dict(zip(sorted(set(sources)), (round(t, 6) for t in loso_t), strict=True)),
        }
    return summary
