"""Enrolling a person on the device from photos: the photos that pass (`edge.perception.photos`,
which says why each other one was refused) become the person's templates in the gallery."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.perception.faces import Perception
from edge.perception.photos import PhotoResult, photo_template

if TYPE_CHECKING:
    from edge.gallery.search import Gallery
    from edge.gallery.store import PersonProfile, PersonRecord


def enroll_photos(
    gallery: Gallery, perception: Perception, profile: PersonProfile, photos: list[Path]
) -> tuple[PersonRecord | None, list[PhotoResult]]:
    """Enrolls `profile` from the photos that pass (None when none does), with every photo's verdict."""
    results = [photo_template(perception, path) for path in photos]
    good = [r for r in results if r.accepted and r.embedding is not None]
    if not good:
        return None, results
    record = gallery.enroll(profile, [r.embedding for r in good], [r.quality or 0.0 for r in good])  # type: ignore[misc]
    return record, results
