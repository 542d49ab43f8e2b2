"""`facegate demo`: enroll the bundled photos, identify the bundled probes, run the daemon on a clip.

Offline, no broker, nothing left behind: the demo builds a real encrypted gallery (the same
code as `facegate gallery`) in a temporary directory with a throw-away key, enrolls
`assets/demo/gallery/<Name>/*.jpg` through the quality gate, identifies each probe face
against it at the `[match] target_fmr` threshold, then runs the daemon (the same `Daemon` as
`facegate run`, with its audit journal in the temporary directory and /metrics off) on
`assets/demo/video/*.mp4` in real time and prints one line per decision and the run summary.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.config import CameraConfig, Config
from edge.errors import FacegateError
from edge.gallery.enroll import enroll_photos
from edge.gallery.loader import open_gallery
from edge.gallery.search import Gallery
from edge.gallery.store import PersonProfile
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.photos import images_in, person_folders


def _enroll(gallery: Gallery, perception: Perception, root: Path) -> None:
    names = []
    for name, photos in person_folders(root):
        record, results = enroll_photos(gallery, perception, PersonProfile(name=name), photos)
        for r in results:
            if not r.accepted:
                print(f"  skipped {r.file}: {r.reason}")
        if record is not None:
            names.append(f"{name} ({sum(r.accepted for r in results)})")
    print(f"enrolled {len(names)} people from {root}: {', '.join(names)}")


def _video(cfg: Config, data_dir: Path, perception: Perception, folder: Path, realtime: bool) -> None:
    from edge.cli.run import DecisionLines, print_summary
    from edge.daemon import Daemon, RunOptions

    clips = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if not clips:
        print(f"\nno demo clip in {folder}")
        return
    cameras = [CameraConfig(name=f"cam{i}", source=str(clip)) for i, clip in enumerate(clips)]
    print(f"\nfacegate run --source {' --source '.join(c.source for c in cameras)}" + (" --realtime" if realtime else ""))
    # No /metrics port: a demo must not collide with a daemon already running on this machine.
    # Names on, explicitly: the demo's lines are read by a person at this terminal, about a
    # throw-away gallery of public figures; and nothing else may carry them, so no broker and no
    # ZeroMQ whatever the config file says ("offline, nothing left behind").
    cfg = dataclasses.replace(
        cfg, metrics=dataclasses.replace(cfg.metrics, enabled=False), privacy=dataclasses.replace(cfg.privacy, show_names=True),
        sync=dataclasses.replace(cfg.sync, broker_host=""), zmq=dataclasses.replace(cfg.zmq, events="", control=""),
    )
    options = RunOptions(cameras, data_dir, realtime=realtime, observers=(DecisionLines(sys.stdout, None),), warn=lambda _m: None)
    print_summary(Daemon(cfg, options, perception).start().run(), sys.stdout)


def run_demo(cfg: Config, assets: Path, realtime: bool = True) -> int:
    started = time.perf_counter()
    perception = Perception(cfg)
    counts = {"identified": 0, "unknown": 0}
    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away key file beside the throw-away gallery: both go with the folder.
        cfg = dataclasses.replace(cfg, gallery=dataclasses.replace(cfg.gallery, data_dir=tmp, key_file=""))
        with open_gallery(Path(tmp), cfg, perception.store, create=True) as gallery:
            _probes(gallery, perception, assets, counts, cfg)
        elapsed = time.perf_counter() - started
        stages = ", ".join(f"{k} {np.median(v):.1f} ms" for k, v in perception.timings_ms.items())
        print(f"\nsummary: {counts['identified']} faces identified, {counts['unknown']} unknown, {elapsed:.1f} s")
        print(f"median per stage: {stages}")
        perception.timings_ms.clear()
        _video(cfg, Path(tmp), perception, assets / "video", realtime)
    return 0


def _probes(gallery: Gallery, perception: Perception, assets: Path, counts: dict[str, int], cfg: Config) -> None:
    _enroll(gallery, perception, assets / "gallery")
    print(
        f"embedder {cfg.embed.model} ({cfg.embed.precision}), threshold {gallery.threshold:.3f} "
        f"for a false-match rate of {cfg.match.target_fmr:g}\n"
    )
    header = f"{'probe':<26} {'face':>4}  {'box (x1,y1,x2,y2)':<22} {'person':<16} {'score':>6}  quality"
    print(header)
    print("-" * len(header))
    for path in images_in(assets / "probes"):
        try:
            faces = perception.faces(load_image(path))
        except FacegateError as exc:
            print(f"{path.name:<26} error: {exc}")
            continue
        if not faces:
            print(f"{path.name:<26} {'-':>4}  no face found")
        for k, face in enumerate(faces, 1):
            match = gallery.identify(face.embedding)  # type: ignore[arg-type]
            person = match.person or "unknown"
            counts["identified" if match.person else "unknown"] += 1
            box = ",".join(f"{v:.0f}" for v in face.detection.box)
            q = "ok" if face.quality.ok else "; ".join(face.quality.reasons)
            print(f"{path.name:<26} {k:>4}  {box:<22} {person:<16} {match.score:>6.3f}  {q}")
