"""Gallery at open: templates decrypted in one joined read, the index and its template→person
maps kept right through enroll and remove. No timing here (bench/gallery.py --encrypted)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.errors import GalleryError
from edge.gallery.crypto import new_key
from edge.gallery.search import Gallery
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile

MODEL = "edgeface_xxs_int8"
DIM = 32


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def people(tmp_path: Path) -> tuple[Path, bytes, dict[str, np.ndarray]]:
    """Four people, two or three templates each, enrolled interleaved (a person's templates do
    not have consecutive ids, so the open meets each person in several runs)."""
    rng = np.random.default_rng(7)
    centres = {name: _unit(rng.standard_normal(DIM)) for name in ("Ann", "Bob", "Cy", "Di")}
    kek = new_key()
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        for name in ("Ann", "Bob", "Ann", "Cy", "Di", "Bob", "Cy"):
            noisy = _unit(centres[name] + 0.2 * rng.standard_normal((1 + len(name) % 2, DIM)))
            store.enroll(PersonProfile(name), list(noisy), [1.0] * len(noisy), MODEL)
    return tmp_path, kek, centres


def test_open_identifies_every_person_by_their_own_templates(people) -> None:
    data_dir, kek, centres = people
    with Gallery.open(data_dir, kek, MODEL, DIM, threshold=0.5) as gallery:
        assert len(gallery) == 4
        for name, centre in centres.items():
            match = gallery.identify(centre, k=4)
            assert match.person == name
            assert len({c.person for c in match.candidates}) == len(match.candidates)  # one entry per person


def test_remove_and_enroll_keep_the_maps_in_step(people) -> None:
    data_dir, kek, centres = people
    rng = np.random.default_rng(8)
    with Gallery.open(data_dir, kek, MODEL, DIM, threshold=0.5) as gallery:
        assert gallery.remove("Bob")
        assert len(gallery) == 3
        assert gallery.identify(centres["Bob"], k=4).person != "Bob"
        assert "Bob" not in {c.person for c in gallery.identify(centres["Bob"], k=10).candidates}
        # A new template for an existing person, then a new person: both answer at once.
        gallery.enroll(PersonProfile("Cy"), [_unit(centres["Cy"] + 0.05 * rng.standard_normal(DIM))], [1.0])
        newcomer = _unit(rng.standard_normal(DIM))
        gallery.enroll(PersonProfile("Ed"), [newcomer], [1.0])
        assert len(gallery) == 4
        assert gallery.identify(newcomer).person == "Ed"
        assert gallery.identify(centres["Cy"]).person == "Cy"
    with Gallery.open(data_dir, kek, MODEL, DIM, threshold=0.5) as reopened:  # the same from disk
        assert len(reopened) == 4
        assert reopened.identify(newcomer).person == "Ed"


def test_templates_of_a_missing_person_stop_the_open(people) -> None:
    data_dir, kek, _ = people
    db = sqlite3.connect(data_dir / GALLERY_FILE)  # foreign keys off: the cascade does not run
    with db:
        db.execute("DELETE FROM persons WHERE id=2")
    db.close()
    with GalleryStore.open(data_dir, kek) as store, pytest.raises(GalleryError, match="4 templates refer to persons that do not exist"):
        store.load_embeddings(MODEL)
