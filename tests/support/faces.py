"""Galleries of real faces, shared by the tests that run the video runtime on real clips.

Every gallery here is a real encrypted gallery (`Gallery.open` with a throw-away key) enrolled
through the real perception stages from the bundled photos (assets/demo/gallery) or from frames
of a clip in ../shared/data/videos.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.gallery.enroll import enroll_photos
from edge.gallery.records import PersonProfile
from edge.gallery.search import Gallery
from edge.gallery.thresholds import threshold_policy
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.photos import person_folders

REPO = Path(__file__).resolve().parents[2]
DEMO_GALLERY = REPO / "assets" / "demo" / "gallery"
WEBCAM_MAN = "Webcam Man"  # the person of ../shared/data/videos/apfol_real2.webm (and its replay, apfol_fake2)


def new_gallery(tmp: Path, perception: Perception) -> Gallery:
    """An empty encrypted gallery for the perception's embedder, with the daemon's threshold policy."""
    cfg = perception.cfg
    return Gallery.open(
        tmp, os.urandom(32), embedder_model_name(cfg), embedder_spec(cfg.embed.model).dim,
        threshold_policy(cfg, perception.store), create=True,
    )


def video_frames(path: Path, start: int, stop: int, step: int = 1) -> list[np.ndarray]:
    """BGR frames start, start+step, ... below stop."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    for i in range(stop):
        ok, frame = cap.read()
        if not ok:
            break
        if i >= start and (i - start) % step == 0:
            frames.append(frame)
    cap.release()
    return frames


def write_stills(frames: list[np.ndarray], folder: Path) -> Path:
    """The frames as a folder of JPEG stills (a camera source), in order."""
    folder.mkdir(parents=True)
    for i, bgr in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), bgr)
    return folder


def enroll_from_video(gallery: Gallery, perception: Perception, name: str, video: Path, start: int, stop: int, step: int) -> int:
    """Enrolls `name` from the gate-passing frames of a clip; the number of templates."""
    embeddings, qualities = [], []
    for bgr in video_frames(video, start, stop, step):
        faces = perception.faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if faces and faces[0].quality.ok:
            embeddings.append(faces[0].embedding)
            qualities.append(faces[0].quality.score)
    gallery.enroll(PersonProfile(name=name), embeddings, qualities)
    return len(embeddings)


def enroll_demo_people(gallery: Gallery, perception: Perception, skip: set[str] = frozenset()) -> None:
    """The bundled people (assets/demo/gallery) as distractors, except those in `skip`."""
    for name, photos in person_folders(DEMO_GALLERY):
        if name not in skip:
            enroll_photos(gallery, perception, PersonProfile(name=name), photos)
