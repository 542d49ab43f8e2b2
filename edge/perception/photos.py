"""Photos → templates, refusing any photo that would make a bad template, and saying why.

A bad template is worse than none: it lowers the person's scores at the door, or — from a
photo with two people in it — lets the wrong person in. So a photo is used only when it shows
exactly one dominant face and that face passes every quality gate.

Used by enrollment on the device (`edge.gallery.enroll`) and on the hub (`admin person add`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import FacegateError
from edge.perception.faces import Perception
from edge.perception.imageio import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff")
# A second face at least this large (relative to the largest) makes the photo ambiguous.
SECOND_FACE_RATIO = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class PhotoResult:
    file: Path
    reason: str  # "" when accepted
    quality: float | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        return not self.reason

    def to_dict(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "accepted": self.accepted,
            "reason": self.reason or None,
            "quality": None if self.quality is None else round(self.quality, 4),
        }


def photo_template(perception: Perception, path: Path) -> PhotoResult:
    try:
        faces = perception.faces(load_image(path))
    except FacegateError as exc:
        return PhotoResult(path, str(exc))
    if not faces:
        return PhotoResult(path, "no face found")
    largest = faces[0].detection.width
    others = [f for f in faces[1:] if f.detection.width >= SECOND_FACE_RATIO * largest]
    if others:
        return PhotoResult(path, f"{1 + len(others)} faces of similar size: use a photo of the person alone")
    face = faces[0]
    if not face.quality.ok:
        return PhotoResult(path, "; ".join(face.quality.reasons), face.quality.score)
    return PhotoResult(path, "", face.quality.score, face.embedding)


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def person_folders(root: Path) -> Iterator[tuple[str, list[Path]]]:
    """`root/<Name>/*.jpg` → (display name, photos); underscores in folder names become spaces."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        yield folder.name.replace("_", " "), images_in(folder)
