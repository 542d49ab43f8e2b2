"""`facegate eval liveness --videos`: each clip decided as the runtime decides a track.

Every frame goes through the perception core; the largest face is one track fed to
TrackLiveness, and the clip is decided by `result().live` at the configured threshold —
exactly the runtime path, nothing fitted to the videos. The same frames are also cut into
consecutive tracks of `window` face frames: the runtime decides a track a few hundred ms after
its first good frame, so each window is one such decision, and APCER / BPCER over windows say
how often a door would err on a short look. Windows of one clip are not independent (same
person, light, screen): their intervals are narrower than the evidence, read them per clip too.
A clip in which no frame shows a face gets no decision on a device (no track): it is a
non-response, kept out of APCER / BPCER and counted in BPNRR / APNRR (`non_response`).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from edge.config import Config
from edge.errors import LabelsError
from edge.eval import pad_metrics as pm
from edge.eval.liveness_common import Labelled, cue_means, model_facts, progress
from edge.perception.faces import Perception
from edge.perception.liveness.checker import Liveness, LivenessResult

WINDOW = 10  # face frames per track in the windowed video figures


def track_video(
    perception: Perception, liveness: Liveness, path: Path, window: int
) -> tuple[LivenessResult, list[LivenessResult]]:
    """The video's largest face per frame as one track, and as consecutive `window`-frame tracks."""
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
    cfg: Config, labels: list[Labelled], show: bool = False, window: int = WINDOW
) -> tuple[dict[str, object], list[pm.Item]]:
    perception = Perception(cfg, with_embedder=False)
    liveness = Liveness(cfg, perception.store)
    items, accepted, cues, per_video, every, responded = [], [], [], [], [], []
    win_items, win_accepted = [], []
    tick = progress(show)
    started = time.perf_counter()
    for n, row in enumerate(labels, 1):
        result, parts = track_video(perception, liveness, row.path, window)
        every.append(pm.Item(row.label, result.score, row.attack_type, row.source))
        responded.append(result.frames > 0)
        if result.frames > 0:
            items.append(every[-1])
            accepted.append(result.live)
            cues.append(dict(result.cues))
        for part in parts:
            win_items.append(pm.Item(row.label, part.score, row.attack_type, row.source))
            win_accepted.append(part.live)
        right = sum(p.live == (row.label == "live") for p in parts)
        per_video.append({
            "file": str(row.path), "label": row.label, "source": row.source, "decision": ("live" if result.live else "spoof") if result.frames else "no_face",
            **result.to_dict(),
            "windows": len(parts), "windows_live": sum(p.live for p in parts), "windows_right": right,
            "window_score_min": round(min((p.score for p in parts), default=float("nan")), 4),
            "window_score_max": round(max((p.score for p in parts), default=float("nan")), 4),
        })
        tick(n, len(labels))
    summary = pm.summarise(items, accepted, liveness.threshold)
    summary["protocol"] = (
        "device: one track per video (largest face per frame) decided at the configured [liveness] threshold, "
        f"nothing fitted; `windows`: the same frames as consecutive {window}-frame tracks, each decided the same way; "
        "95 % Wilson intervals (windows of one clip are correlated)"
    )
    summary["non_response"] = pm.non_response(every, responded)
    summary["windows"] = {**pm.summarise(win_items, win_accepted, liveness.threshold), "frames_per_window": window}
    summary["cues"] = cue_means(items, cues)
    summary["videos"] = per_video
    summary.update(model_facts(cfg, (time.perf_counter() - started) * 1000.0 / len(labels)))
    return summary, items + win_items
