"""Planar motion per 10-frame window, held out (issue 20); prints ONE JSON object.

A replay on a phone, a monitor or a photo is a flat plane: the FaceMesh points of two frames are
then explained by one homography up to landmark noise, while a real head that turns shows
parallax (nose tip against cheek and jaw contour) no homography explains. This measures, for
every 10-face-frame window of the clips of bench/liveness_videos.csv and
liveness_more/videos.csv (the windows `eval liveness --videos` decides):

- `motion`: the largest mean landmark displacement between two frames of the window, in
  inter-ocular distances (IOD) — how much the face moved at all;
- `rh`: the least-squares homography residual (mean, IOD; `cues.homography_residual`, no RANSAC)
  of that pair, and `ra` the affine one;
- `rot`: the out-of-plane rotation between the pair from FaceMesh's own 3-D points (Kabsch on
  x, y, z), degrees — the head motion that produces parallax; translation and in-plane rotation
  produce none, so a window whose face only slid or rolled has no evidence either way;
- `expected`: the homography residual a rigid 3-D face would leave for that rotation (FaceMesh's
  3-D mesh of the first frame rotated by the Kabsch rotation, projected orthographically);
- `ratio` = rh / expected: ~1 when the 2-D motion is as 3-D as FaceMesh's depth says
  (depth-from-landmarks consistency), ~0 when the motion is planar although the mesh says the
  head turned; `r3`: residual of an affine camera fitted on the 3-D points (2-D of the second
  frame from x, y, z of the first).

Then, per window, "no evidence" unless `expected` >= EVIDENCE_IOD (set from FaceMesh noise:
~0.01 IOD on a still plane, so 3x that), and the planar veto fires when the observed residual is
below VETO_RATIO of the expected one. The two constants are physical, not fitted; the script also
reports the threshold on `ratio` fitted leave-one-source-out (min ACER over the other sources'
windows, applied to the held-out source), and the fusion with the shipped window score (the
veto counting as logit(CUE_FLOOR), as every hand-made cue does).

    .venv/bin/python bench/liveness_planar.py [--cache /tmp/planar.npz]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import Config
from edge.eval.liveness_common import read_all
from edge.perception.faces import Perception
from edge.perception.liveness import cues
from edge.perception.liveness.checker import CUE_FLOOR, PLANAR_POINTS, Liveness, logit

DATA = REPO.parent / "shared" / "data"
VIDEOS = (REPO / "bench" / "liveness_videos.csv", DATA / "liveness_more" / "videos.csv")
WINDOW = 10
EVIDENCE_IOD = 0.03  # expected parallax (IOD) below which a window says nothing: 3x FaceMesh noise
VETO_RATIO = 0.3  # observed / expected parallax under which the motion is called planar


def collect(cache: Path | None) -> list[dict]:
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    cfg = Config()
    perception = Perception(cfg, with_embedder=False)
    liveness = Liveness(cfg, perception.store)
    clips = []
    for row in read_all(list(VIDEOS), None):
        cap = cv2.VideoCapture(str(row.path))
        # `meshes`: per face frame, its FaceMesh points or None; windows count face frames as
        # `eval liveness --videos` does (a face without a mesh still fills its window).
        meshes, windows, track, part, n = [], [], liveness.new_track(), liveness.new_track(), 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = perception.faces(rgb, embed=False)
            n += 1
            if not faces:
                continue
            meshes.append(None if faces[0].mesh is None else faces[0].mesh.points.astype(np.float64))
            track.add(rgb, faces[0], n / 30.0)
            part.add(rgb, faces[0], n / 30.0)
            if len(meshes) % WINDOW == 0:
                windows.append(part.result().score)
                part = liveness.new_track()
        cap.release()
        result = track.result()
        clips.append({"clip": f"{row.source}/{row.path.name}", "source": row.source, "label": row.label,
                      "meshes": meshes, "windows": windows, "track": result.score if result.frames else None,
                      "track_planar": result.cues.get("planar")})
    if cache is not None:
        cache.write_bytes(pickle.dumps(clips))
    return clips


def kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising |R a_i - b_i| for centred, scale-normalised 3-D point sets."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def centred(p: np.ndarray) -> np.ndarray:
    c = p - p.mean(axis=0)
    return c / math.sqrt((c[:, :2] ** 2).sum(axis=1).mean())


def affine_residual(a: np.ndarray, b: np.ndarray) -> float:
    """Mean residual of b (2-D) fitted from a (2-D: an affine map; 3-D: an affine camera, 2x4)."""
    x = np.hstack([a, np.ones((len(a), 1))])
    coef, *_ = np.linalg.lstsq(x, b, rcond=None)
    return float(np.sqrt(((x @ coef - b) ** 2).sum(axis=1)).mean())


def pair(m1: np.ndarray, m2: np.ndarray) -> dict[str, float]:
    p1, p2 = m1[PLANAR_POINTS], m2[PLANAR_POINTS]
    iod = max((cues.eye_distance(m1) + cues.eye_distance(m2)) / 2.0, 1e-6)
    a, b = centred(p1), centred(p2)
    rot = kabsch(a, b)
    out_of_plane = math.degrees(math.acos(min(1.0, abs(float(rot[2, 2])))))
    # Where a rigid 3-D face would put the first frame's points after that rotation (orthographic,
    # in the first frame's pixels): the parallax that 3-D motion would leave against a homography.
    scale = math.sqrt(((p1[:, :2] - p1[:, :2].mean(0)) ** 2).sum(axis=1).mean())
    moved = (a @ rot.T)[:, :2] * scale + p1[:, :2].mean(0)
    return {
        "motion": float(np.sqrt(((p2[:, :2] - p1[:, :2]) ** 2).sum(axis=1)).mean()) / iod,
        "rh": cues.homography_residual(p1[:, :2], p2[:, :2]) / iod,
        "ra": affine_residual(p1[:, :2], p2[:, :2]) / iod,
        "r3": affine_residual(p1, p2[:, :2]) / iod,
        "rot": out_of_plane,
        "expected": cues.homography_residual(p1[:, :2], moved) / iod,
    }


def window_stats(meshes: list[np.ndarray | None]) -> dict[str, float]:
    """The window's pair with the most expected parallax (ties: most motion)."""
    meshes = [m for m in meshes if m is not None]
    if len(meshes) < 2:
        return {"motion": 0.0, "rh": 0.0, "ra": 0.0, "r3": 0.0, "rot": 0.0, "expected": 0.0, "ratio": 1.0, "rh_per_motion": 0.0}
    pairs = [pair(meshes[i], meshes[j]) for i, j in itertools.combinations(range(len(meshes)), 2)]
    best = max(pairs, key=lambda p: (p["expected"], p["motion"]))
    return {**best, "ratio": best["rh"] / max(best["expected"], 1e-9), "rh_per_motion": best["rh"] / max(best["motion"], 1e-9)}


def veto(stats: dict[str, float], ratio: float = VETO_RATIO) -> str:
    if stats["expected"] < EVIDENCE_IOD:
        return "no_evidence"
    return "planar" if stats["ratio"] < ratio else "3d"


def fused(score: float, verdict: str) -> float:
    if verdict != "planar":
        return score
    return 1.0 / (1.0 + math.exp(-(logit(score) + logit(CUE_FLOOR))))


def counts(rows: list[dict], key: str) -> dict[str, object]:
    live = [r for r in rows if r["label"] == "live"]
    spoof = [r for r in rows if r["label"] == "spoof"]
    return {"apcer": f"{sum(r[key] >= 0.5 for r in spoof)}/{len(spoof)}",
            "bpcer": f"{sum(r[key] < 0.5 for r in live)}/{len(live)}"}


def loso_ratio(rows: list[dict]) -> dict[str, float]:
    """Threshold on `ratio` (windows with evidence) fitted on the other sources: min ACER of the veto
    fused with the shipped score; applied to the held-out source."""
    grid = [0.05 * k for k in range(0, 21)]
    out = {}

    def acer(sub: list[dict], t: float) -> float:
        s = [fused(r["shipped"], veto(r, t)) for r in sub]
        live = [x < 0.5 for x, r in zip(s, sub, strict=True) if r["label"] == "live"]
        spoof = [x >= 0.5 for x, r in zip(s, sub, strict=True) if r["label"] == "spoof"]
        return 0.5 * (float(np.mean(live)) if live else 0.0) + 0.5 * (float(np.mean(spoof)) if spoof else 0.0)

    for source in sorted({r["source"] for r in rows}):
        train = [r for r in rows if r["source"] != source]
        out[source] = min(grid, key=lambda t: (acer(train, t), t))
    return out


def auc(rows: list[dict], key: str, sign: float) -> float | None:
    """P(a live window's sign*key > a replay window's), ties half: 0.5 = no signal."""
    live = [sign * r[key] for r in rows if r["label"] == "live"]
    spoof = [sign * r[key] for r in rows if r["label"] == "spoof"]
    if not live or not spoof:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in live for b in spoof)
    return round(wins / (len(live) * len(spoof)), 3)


def tilted_photo() -> dict[str, float]:
    """Depth consistency on a known plane: a frame of apfol_real2.webm warped as a photo held up and
    tilted (tests/perception/test_liveness_cues.py's views), FaceMesh on each view."""
    cap = cv2.VideoCapture(str(DATA / "videos" / "apfol_real2.webm"))
    for _ in range(31):
        ok, bgr = cap.read()
    cap.release()
    if not ok:
        return {}
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    perception, meshes = Perception(Config(), with_embedder=False), []
    for k in range(12):
        t = k / 11
        tilt, shift = 0.12 * w * np.sin(np.pi * t), 40.0 * t
        dst = np.float32([[shift, 0], [w - tilt + shift, tilt * 0.5], [w - tilt + shift, h - tilt * 0.5], [shift, h]])
        view = cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REPLICATE)
        faces = perception.faces(view, embed=False)
        if faces and faces[0].mesh is not None:
            meshes.append(faces[0].mesh.points.astype(np.float64))
    return {k: round(v, 4) for k, v in window_stats(meshes).items()} if len(meshes) >= 2 else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, help="pickle of the perception pass (reused when present)")
    args = parser.parse_args()
    clips = collect(args.cache)
    rows = []
    for c in clips:
        for k, score in enumerate(c["windows"]):
            stats = window_stats(c["meshes"][k * WINDOW : (k + 1) * WINDOW])
            rows.append({"clip": c["clip"], "source": c["source"], "label": c["label"], "shipped": score, **stats})
    for r in rows:
        r["verdict"] = veto(r)
        r["with_veto"] = fused(r["shipped"], r["verdict"])
    thresholds = loso_ratio(rows)
    for r in rows:
        r["with_veto_loso"] = fused(r["shipped"], veto(r, thresholds[r["source"]]))
    per_clip: dict[str, dict] = defaultdict(dict)
    for c in clips:
        mine = [r for r in rows if r["clip"] == c["clip"]]
        ev = [r for r in mine if r["verdict"] != "no_evidence"]
        # Whole track: vetoed when any window with evidence is planar (the track's weakest window).
        track_veto = any(r["verdict"] == "planar" for r in mine)
        per_clip[c["clip"]] = {
            "label": c["label"], "windows": len(mine), "with_evidence": len(ev),
            "planar_windows": sum(r["verdict"] == "planar" for r in mine),
            "ratio_median": round(float(np.median([r["ratio"] for r in ev])), 3) if ev else None,
            "ratio_min": round(min(r["ratio"] for r in ev), 3) if ev else None,
            "expected_median": round(float(np.median([r["expected"] for r in mine])), 4) if mine else None,
            "rh_median": round(float(np.median([r["rh"] for r in mine])), 4) if mine else None,
            "r3_median": round(float(np.median([r["r3"] for r in mine])), 4) if mine else None,
            "rot_median": round(float(np.median([r["rot"] for r in mine])), 1) if mine else None,
            "motion_median": round(float(np.median([r["motion"] for r in mine])), 3) if mine else None,
            "track_shipped": None if c["track"] is None else round(c["track"], 4),
            "track_planar_cue": None if c["track_planar"] is None else round(c["track_planar"], 3),
            "track_with_veto": None if c["track"] is None else round(fused(c["track"], "planar" if track_veto else "3d"), 4),
        }
    print(json.dumps({
        "windows": len(rows),
        "constants": {"evidence_iod": EVIDENCE_IOD, "veto_ratio": VETO_RATIO, "window": WINDOW},
        "shipped": counts(rows, "shipped"),
        "with_veto_physical": counts(rows, "with_veto"),
        "with_veto_ratio_loso": {**counts(rows, "with_veto_loso"), "thresholds": thresholds},
        "verdicts": {lab: {v: sum(r["verdict"] == v for r in rows if r["label"] == lab) for v in ("no_evidence", "planar", "3d")}
                     for lab in ("live", "spoof")},
        "auc": {"ratio_with_evidence": auc([r for r in rows if r["verdict"] != "no_evidence"], "ratio", 1.0),
                "rh_per_motion_moved": auc([r for r in rows if r["motion"] >= cues.PLANAR_MIN_MOTION], "rh_per_motion", 1.0),
                "rh": auc(rows, "rh", 1.0), "rot": auc(rows, "rot", 1.0)},
        "ratio_with_evidence": {
            lab: [round(float(q), 3) for q in np.percentile([r["ratio"] for r in rows if r["label"] == lab
                                                             and r["verdict"] != "no_evidence"], (0, 10, 50, 90))]
            for lab in ("live", "spoof")},
        "tilted_photo": tilted_photo(),
        "accepted_replay_windows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                    for r in rows if r["label"] == "spoof" and r["shipped"] >= 0.5],
        "per_clip": per_clip,
    }))


if __name__ == "__main__":
    main()
