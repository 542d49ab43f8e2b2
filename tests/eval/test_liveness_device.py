"""`facegate eval liveness` decides as the device does, on a small real subset: face crops and
CelebA-Spoof photos of four sources, and the shortest live clip. Cheap on purpose (a few dozen
images, 23 frames); the full figures are in docs/liveness.md."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edge.config import Config
from edge.eval.liveness import run_eval
from edge.eval.liveness_common import read_labels
from edge.eval.liveness_images import PHOTO_MAX_FACE_AREA, judge
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness.checker import Liveness
from tests.conftest import unavailable

PER_CLASS = 3  # rows per label and source
SOURCES = {"liveness": ("apfol", "alexcamargoweb"), "liveness_more": ("celeba_spoof_reynaraezra", "manikantha")}


@pytest.fixture(scope="module")
def subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for folder, sources in SOURCES.items():
        labels = shared_data / folder / "labels.csv"
        if not labels.is_file():
            unavailable(f"{labels} missing from the shared data")
        with labels.open(newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
        for source in sources:
            for label in ("live", "spoof"):
                picked = [r for r in table if r["source"] == source and r["label"] == label][:PER_CLASS]
                rows += [{**r, "file": str(shared_data / folder / r["file"])} for r in picked]
    path = tmp_path_factory.mktemp("liveness-device") / "subset.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "attack_type", "source"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def device_summary(model_store, subset: Path) -> dict:
    return run_eval(Config(), [subset], None, None, calibrate_loso=True)


def test_images_are_decided_at_the_shipped_threshold_per_source_with_intervals(device_summary: dict) -> None:
    s = device_summary
    assert s["protocol"].startswith("device") and s["threshold"] == Config().liveness.threshold
    assert s["n_live"] == s["n_spoof"] == PER_CLASS * 4
    assert set(s["by_source"]) == {src for sources in SOURCES.values() for src in sources}
    for figures in [s, *s["by_source"].values()]:
        for key in ("apcer", "bpcer", "acer"):
            lo, hi = figures[f"{key}_ci95"]
            assert lo <= figures[key] <= hi
    assert s["by_source"]["manikantha"]["apcer_by_attack_type"]["replay_laptop_screen"]["n"] == PER_CLASS
    # Nothing is fitted at the shipped configuration: every source is already held out.
    assert s["leave_one_source_out"]["fitted"].startswith("nothing") and s["leave_one_source_out"]["acer"] == s["acer"]
    calibrated = s["calibrated_leave_one_source_out"]
    assert set(calibrated["by_source"]) == set(s["by_source"]) and calibrated["n_live"] == s["n_live"]


def test_photos_go_through_the_detector_and_crops_keep_their_own_box(device_summary: dict, model_store, subset: Path) -> None:
    kinds = device_summary["kinds"]
    assert kinds["apfol"] == {"crop": 2 * PER_CLASS} and kinds["alexcamargoweb"] == {"crop": 2 * PER_CLASS}
    assert kinds["celeba_spoof_reynaraezra"].get("photo", 0) >= PER_CLASS
    cfg = Config()
    perception = Perception(cfg, model_store, with_embedder=False)
    liveness = Liveness(cfg, model_store)
    rows = read_labels(subset, None)
    photo = judge(perception, liveness, next(r for r in rows if r.source == "celeba_spoof_reynaraezra" and r.label == "live"))
    crop = judge(perception, liveness, next(r for r in rows if r.source == "apfol"))
    assert photo.kind == "photo" and photo.result is not None and photo.result.threshold == cfg.liveness.threshold
    x1, y1, x2, y2 = photo.box
    h, w = load_image(photo.row.path).shape[:2]
    assert photo.frame_cues and (x2 - x1) * (y2 - y1) <= PHOTO_MAX_FACE_AREA * w * h
    assert crop.kind == "crop" and crop.box[:2] == (0.0, 0.0)


def test_cross_validation_stays_an_option_with_thresholds_from_other_sources(model_store, subset: Path) -> None:
    s = run_eval(Config(), [subset], None, None, cross_validate=True)
    assert s["protocol"].startswith("cross-validated") and "bpcer_at_apcer_5" in s
    loso = s["leave_one_source_out"]
    assert set(loso["thresholds"]) == set(s["by_source"]) and loso["fitted"].startswith("threshold")


def test_a_clip_is_one_track_and_ten_frame_windows_at_the_shipped_threshold(model_store, shared_data: Path, tmp_path: Path) -> None:
    clip = shared_data / "videos" / "intel_head-pose-face-detection-female.gif"
    if not clip.is_file():
        unavailable(f"{clip} missing from the shared data")
    videos = tmp_path / "videos.csv"
    videos.write_text(f"file,label,attack_type,source\n{clip},live,,intel\n")
    s = run_eval(Config(), None, [videos], None)
    assert s["protocol"].startswith("device") and s["n_live"] == 1
    (video,) = s["videos"]
    assert video["decision"] == "live" and video["frames"] == 23
    windows = s["windows"]
    assert windows["frames_per_window"] == 10 and windows["n_live"] == video["windows"] == 2
    assert windows["bpcer"] == 0.0 and windows["bpcer_ci95"][0] == 0.0 and video["windows_right"] == 2
