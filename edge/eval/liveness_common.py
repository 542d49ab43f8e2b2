"""What the liveness evaluations share: the labelled rows, progress, per-cue figures."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.errors import LabelsError
from edge.eval import pad_metrics as pm

LABELS = ("live", "spoof")
KINDS = ("", "crop", "photo")  # optional `kind` column; "" = decided from the image (liveness_images)


@dataclass(frozen=True, slots=True)
class Labelled:
    path: Path
    label: str
    attack_type: str
    source: str
    kind: str = ""


def read_labels(csv_path: Path, root: Path | None) -> list[Labelled]:
    """Rows of a `file,label[,attack_type][,source][,kind]` CSV; files relative to `root` or the CSV."""
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
        kind = (row.get("kind") or "").strip()
        if kind not in KINDS:
            raise LabelsError(f"{csv_path}:{n}: kind must be crop or photo, or empty (got {kind!r})")
        path = base / row["file"]
        if not path.is_file():
            raise LabelsError(f"{csv_path}:{n}: {path} does not exist")
        attack = (row.get("attack_type") or "").strip() if label == "spoof" else ""
        out.append(Labelled(path, label, attack, (row.get("source") or "").strip(), kind))
    if not out:
        raise LabelsError(f"{csv_path}: no rows")
    return out


def read_all(csvs: Sequence[Path], root: Path | None) -> list[Labelled]:
    """Several CSVs as one set (each file relative to `root` or its own CSV)."""
    return [row for path in csvs for row in read_labels(path, root)]


def progress(enabled: bool) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if enabled and (done == total or done % 50 == 0):
            print(f"\r{done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return show


def cue_means(items: Sequence[pm.Item], cues: Sequence[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """AUC and class means of each cue, over the items that have it."""
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


def model_facts(cfg: Config, ms: float) -> dict[str, object]:
    return {"model": cfg.liveness.model, "precision": cfg.liveness.precision, "ms_per_item": round(ms, 2)}
