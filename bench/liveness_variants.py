"""Liveness variants measured against the shipped decision, held out; prints ONE JSON object.

What docs/liveness.md#second-pass-native-crops-weakest-window-cues-calibration-2026-12-04 reports,
reproducible from the repository (issue 20). Every presentation of ../shared/data is scored once:
the labelled images (crops and photos, geometry as `eval liveness` picks it) and the best-quality
frame of every 10-face-frame window of the clips (bench/liveness_videos.csv and
liveness_more/videos.csv), both MiniFASNets' three-class softmax at two box conventions, the
shipped pixel cues and the candidate cues. Then, at the shipped threshold 0.5 with the shipped
fusion and re-check (blink and planar left out: neutral on one frame):

- `box_convention`: BlazeFace's box (shipped) against the box mapped to the SSD convention of the
  labelled crops (height / 0.786, width x 0.903, centre 0.125 box heights up; read from the
  crops' geometry) before the context enlargement. Photos and windows only: a crop is its box.
- `argmax_rule`: P(real) against the likelier attack class (upstream's decision) instead of >= 0.5.
- `calibration_on_windows`: the logistic fusion fitted on all images, applied to the windows.
- `cues`: AUC per cue statistic, and the decisions each changes (full-resolution moire in the
  shipped moire rule; the screen-border cue with its weight fitted leave-one-source-out over the
  sources with surroundings; a closed four-sided device rectangle as full evidence).

    .venv/bin/python bench/liveness_variants.py
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import Config
from edge.eval import pad_metrics as pm
from edge.eval.liveness_common import read_all
from edge.eval.liveness_images import image_kind
from edge.eval.pad_calibration import features, fit_logistic
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness import cues
from edge.perception.liveness.checker import CUE_FLOOR, fuse, logit
from edge.perception.liveness.model import PassiveModel, context_crop

DATA = REPO.parent / "shared" / "data"
IMAGES = (DATA / "liveness" / "labels.csv", DATA / "liveness_more" / "labels.csv")
VIDEOS = (REPO / "bench" / "liveness_videos.csv", DATA / "liveness_more" / "videos.csv")
WINDOW = 10
Box = tuple[float, float, float, float]


def ssd_box(box: Box) -> Box:
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - 0.125 * bh
    w, h = 0.903 * bw, bh / 0.786
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def softmax3(model: PassiveModel, rgb: np.ndarray, box: Box) -> list[float]:
    ((session, name, spec),) = model._models
    crop = context_crop(rgb, box, spec.scale)[:, :, ::-1]
    (logits,) = session.run({name: np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)})[:1]
    e = np.exp(logits[0] - logits[0].max())
    return [float(v) for v in e / e.sum()]


def moire_full(region: np.ndarray) -> float:
    """The moiré statistic on native-resolution 128² tiles (at most 9), their maximum."""
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    n = cues.SPECTRUM_SIZE
    if grey.shape[0] < n or grey.shape[1] < n:
        return cues.moire_score(region)[1]
    tiles = [grey[y : y + n, x : x + n] for y in range(0, grey.shape[0] - n + 1, n) for x in range(0, grey.shape[1] - n + 1, n)]
    return max(cues.moire_score(cv2.cvtColor(t, cv2.COLOR_GRAY2RGB))[1] for t in tiles[:9])


def context(rgb: np.ndarray, box: Box, scale: float) -> tuple[np.ndarray, Box]:
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    left, top = int(max(cx - bw * scale / 2, 0)), int(max(cy - bh * scale / 2, 0))
    right, bottom = int(min(cx + bw * scale / 2, w)), int(min(cy + bh * scale / 2, h))
    return rgb[top:bottom, left:right], (x1 - left, y1 - top, x2 - left, y2 - top)


def glare_ring(rgb: np.ndarray, box: Box) -> float:
    ctx, (a, b, c, d) = context(rgb, box, 2.5)
    hsv = cv2.cvtColor(np.ascontiguousarray(ctx), cv2.COLOR_RGB2HSV)
    spec = (hsv[..., 2] >= cues.GLARE_V) & (hsv[..., 1] <= cues.GLARE_S)
    mask = np.ones(spec.shape, bool)
    mask[int(max(b, 0)) : int(d), int(max(a, 0)) : int(c)] = False
    return float(spec[mask].mean()) if mask.any() else 0.0


def border_sides(rgb: np.ndarray, box: Box) -> int:
    """Sides of the face with a long straight edge parallel to the box side (Hough on Canny)."""
    ctx, (a, b, c, d) = context(rgb, box, 3.0)
    bw, bh = c - a, d - b
    grey = cv2.cvtColor(ctx, cv2.COLOR_RGB2GRAY)
    k = max(1.0, max(grey.shape) / 320.0)
    if k > 1:
        grey = cv2.resize(grey, (int(grey.shape[1] / k), int(grey.shape[0] / k)), interpolation=cv2.INTER_AREA)
    lines = cv2.HoughLinesP(cv2.Canny(grey, 60, 150), 1, np.pi / 180, 40, minLineLength=int(0.8 * bw / k), maxLineGap=4)
    sides = set()
    for x1, y1, x2, y2 in ([] if lines is None else lines.reshape(-1, 4).astype(np.float64) * k):
        ang = abs(math.degrees(math.atan2(y2 - y1, x2 - x1))) % 180
        xm, ym = (x1 + x2) / 2, (y1 + y2) / 2
        if ang < 12 or ang > 168:
            if a - bw < xm < c + bw and b - 1.2 * bh < ym < b:
                sides.add("top")
            if a - bw < xm < c + bw and d < ym < d + 1.2 * bh:
                sides.add("bottom")
        elif 78 < ang < 102 and abs(y2 - y1) >= 0.8 * bh and b - bh < ym < d + bh:
            if a - 1.2 * bw < xm < a:
                sides.add("left")
            if c < xm < c + 1.2 * bw:
                sides.add("right")
    return len(sides)


def rectangle(rgb: np.ndarray, box: Box, near: float = 0.6, far: float = 2.5, span: float = 0.75, cover: float = 0.8) -> bool:
    """A straight edge covering `cover` of 2·`span` face sizes on all four sides, near..far face
    sizes from the centre: a screen holding the whole head (a live body breaks the lower edge)."""
    x1, y1, x2, y2 = box
    fw, fh = x2 - x1, y2 - y1
    k = 48.0 / max(fw, 1.0)  # the face 48 px wide
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(max(cx - far * fw, 0)), int(max(cy - far * fh, 0))
    region = rgb[top : int(min(cy + far * fh, rgb.shape[0])), left : int(min(cx + far * fw, rgb.shape[1]))]
    if region.size == 0:
        return False
    small = cv2.resize(region, (max(1, int(region.shape[1] * k)), max(1, int(region.shape[0] * k))), interpolation=cv2.INTER_AREA)
    edges = cv2.Canny(cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (3, 3), 0), 40, 120) > 0
    horiz = edges | np.roll(edges, 1, 0) | np.roll(edges, -1, 0)
    vert = (edges | np.roll(edges, 1, 1) | np.roll(edges, -1, 1)).T
    ccx, ccy, sw, sh = (cx - left) * k, (cy - top) * k, fw * k, fh * k

    def line(img: np.ndarray, centre: float, size: float, across: float, across_size: float, sign: int) -> bool:
        lo, hi = max(int(across - span * across_size), 0), min(int(across + span * across_size), img.shape[1])
        if hi - lo < 0.9 * 2 * span * across_size:
            return False  # the edge would leave the image: nothing to tell
        r0, r1 = sorted((centre + sign * near * size, centre + sign * far * size))
        return any(img[r, lo:hi].mean() >= cover for r in range(max(int(r0), 0), min(int(r1), img.shape[0])))

    return (line(horiz, ccy, sh, ccx, sw, -1) and line(horiz, ccy, sh, ccx, sw, 1)
            and line(vert, ccx, sw, ccy, sh, -1) and line(vert, ccx, sw, ccy, sh, 1))


def describe(models: dict[str, PassiveModel], rgb: np.ndarray, box: Box, kind: str) -> dict[str, object]:
    region = cues.face_region(rgb, box)
    out: dict[str, object] = {"kind": kind, "glare": cues.glare_score(region)[0], "moire": cues.moire_score(region)[0],
                              "moire_128": cues.moire_score(region)[1], "moire_full": moire_full(region)}
    for name, model in models.items():
        out[f"{name}_blaze"] = softmax3(model, rgb, box)
        out[f"{name}_ssd"] = softmax3(model, rgb, ssd_box(box)) if kind != "crop" else out[f"{name}_blaze"]
    if kind != "crop":
        out.update(glare_ring=glare_ring(rgb, box), border=border_sides(rgb, box), rectangle=rectangle(rgb, box))
    return out


def presentations(perception: Perception, models: dict[str, PassiveModel]) -> list[dict[str, object]]:
    out = []
    for row in read_all(list(IMAGES), None):
        rgb = load_image(row.path)
        faces = perception.faces(rgb, embed=False) if row.kind != "crop" else []
        kind = image_kind(row.kind, rgb.shape, faces[0].detection.box if faces else None)
        if kind == "no_face":
            continue
        box = faces[0].detection.box if kind == "photo" else (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
        out.append({"part": "image", "source": row.source, "label": row.label, **describe(models, rgb, box, kind)})
    for row in read_all(list(VIDEOS), None):
        cap, window = cv2.VideoCapture(str(row.path)), []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = perception.faces(rgb, embed=False)
            if faces:
                window.append(((faces[0].quality.ok, float(faces[0].quality.score)), rgb, faces[0].detection.box))
            if len(window) == WINDOW:
                _, best, box = max(window, key=lambda w: w[0])
                out.append({"part": "window", "source": row.source, "label": row.label, "clip": row.path.name,
                            **describe(models, best, box, "frame")})
                window = []
        cap.release()
    return out


def p_real(s: list[float]) -> float:
    return s[1]


def p_argmax(s: list[float]) -> float:
    return s[1] / (s[1] + max(s[0], s[2]))  # 0.5 = the model's argmax decision


def shipped(p: dict, box: str = "blaze", rule=p_real, moire: float | None = None) -> float:
    """The shipped single-frame decision score: V1SE, the V2 re-check within 0.4 of 0.5."""
    frame = {"passive": rule(p[f"v1se_{box}"]), "glare": p["glare"], "moire": p["moire"] if moire is None else moire}
    score = fuse(frame)
    if abs(score - 0.5) < 0.4:
        score = fuse({**frame, "passive": math.sqrt(frame["passive"] * rule(p[f"v2_{box}"]))})
    return score


def figures(rows: list[dict], scores: list[float]) -> dict[str, object]:
    """APCER / BPCER at 0.5 per part (images, windows) and per source."""
    out: dict[str, object] = {}
    for part in ("image", "window"):
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # live, rejected, attacks, accepted
        for r, s in zip(rows, scores, strict=True):
            if r["part"] == part:
                c = counts[r["source"]]
                c[0 if r["label"] == "live" else 2] += 1
                c[1 if r["label"] == "live" else 3] += (s < 0.5) if r["label"] == "live" else (s >= 0.5)
        total = [sum(c[i] for c in counts.values()) for i in range(4)]
        out[part] = {"apcer": f"{total[3]}/{total[2]}", "bpcer": f"{total[1]}/{total[0]}",
                     "by_source": {s: {"apcer": f"{c[3]}/{c[2]}", "bpcer": f"{c[1]}/{c[0]}"} for s, c in sorted(counts.items())}}
    return out


def border_loso(rows: list[dict], base: list[float]) -> list[float]:
    """The border cue's log-odds weight fitted (min ACER at 0.5, grid) on the other sources with surroundings."""
    out = list(base)
    with_ctx = [i for i, r in enumerate(rows) if "border" in r]

    def acer(idx: list[int], w: float) -> float:
        s = [1 / (1 + math.exp(-(logit(base[i]) + w * min(rows[i]["border"], 2)))) for i in idx]
        live = [x < 0.5 for x, i in zip(s, idx, strict=True) if rows[i]["label"] == "live"]
        spoof = [x >= 0.5 for x, i in zip(s, idx, strict=True) if rows[i]["label"] == "spoof"]
        return 0.5 * (float(np.mean(live)) if live else 0.0) + 0.5 * (float(np.mean(spoof)) if spoof else 0.0)

    for source in sorted({rows[i]["source"] for i in with_ctx}):
        train = [i for i in with_ctx if rows[i]["source"] != source]
        w = min(np.linspace(-2.0, 0.0, 21), key=lambda w: (acer(train, w), -w))
        for i in with_ctx:
            if rows[i]["source"] == source:
                out[i] = 1 / (1 + math.exp(-(logit(base[i]) + w * min(rows[i]["border"], 2))))
    return out


def cue_aucs(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    out = {}
    for name in ("moire_128", "moire_full", "glare_ring", "border"):
        out[name] = {}
        for part in ("image", "window"):
            live = np.array([-float(r[name]) for r in rows if r["part"] == part and name in r and r["label"] == "live"])
            spoof = np.array([-float(r[name]) for r in rows if r["part"] == part and name in r and r["label"] == "spoof"])
            out[name][part] = round(pm.auc(live, spoof), 3) if live.size and spoof.size else None
    return out


def main() -> None:
    cfg = Config()
    perception = Perception(cfg, with_embedder=False)
    models = {m: PassiveModel.from_store(perception.store, m, "fp32", 1, cfg.models.backend) for m in ("v1se", "v2")}
    rows = presentations(perception, models)
    base = [shipped(r) for r in rows]
    image = [i for i, r in enumerate(rows) if r["part"] == "image"]
    fit = fit_logistic(np.array([features({"passive": rows[i]["v1se_blaze"][1], "glare": rows[i]["glare"],
                                           "moire": rows[i]["moire"]}) for i in image]),
                       np.array([rows[i]["label"] == "live" for i in image]))
    calibrated = [float(fit.probability(np.array([features({"passive": r["v1se_blaze"][1], "glare": r["glare"],
                                                            "moire": r["moire"]})]))[0]) for r in rows]
    moire = [shipped(r, moire=0.5 * math.exp(-max(0.0, float(r["moire_full"]) - cues.MOIRE_PEAK) / cues.MOIRE_SCALE)) for r in rows]
    rect = [1 / (1 + math.exp(-(logit(s) + logit(CUE_FLOOR)))) if r.get("rectangle") else s for r, s in zip(rows, base, strict=True)]
    print(json.dumps({
        "presentations": dict(Counter(r["part"] for r in rows)),
        "shipped": figures(rows, base),
        "box_convention_ssd": figures(rows, [shipped(r, "ssd") for r in rows]),
        "argmax_rule": figures(rows, [shipped(r, rule=p_argmax) for r in rows]),
        # Fitted on the images: only the windows are held out.
        "calibration_on_windows": {"weights": [round(w, 3) for w in fit.weights], "window": figures(rows, calibrated)["window"]},
        "cue_auc": cue_aucs(rows),
        "moire_full_resolution": figures(rows, moire),
        "border_weight_loso": figures(rows, border_loso(rows, base)),
        "rectangle_full_evidence": figures(rows, rect),
        "rectangle_fires": dict(Counter(f"{r['part']}:{r['source']}:{r['label']}" for r in rows if r.get("rectangle"))),
    }))


if __name__ == "__main__":
    main()
