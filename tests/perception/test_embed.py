from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.config import Config
from edge.perception.faces import Perception
from tests.conftest import read_rgb

PHOTOS = "face_recognition/images/knn_examples/train"


def _perception(model_store, model: str, precision: str, flip: bool = False) -> Perception:
    cfg = Config()
    return Perception(replace(cfg, embed=replace(cfg.embed, model=model, precision=precision, flip=flip)), model_store)


@pytest.mark.parametrize("model, dim", [("edgeface_xs", 512), ("edgeface_xxs", 512), ("dlib_resnet", 128)])
def test_same_person_scores_above_different_people(model, dim, model_store, shared_data) -> None:
    p = _perception(model_store, model, "int8")
    obama1 = p.faces(read_rgb(shared_data / PHOTOS / "obama/obama.jpg"))[0].embedding
    obama2 = p.faces(read_rgb(shared_data / PHOTOS / "obama/obama2.jpg"))[0].embedding
    biden = p.faces(read_rgb(shared_data / PHOTOS / "biden/biden.jpg"))[0].embedding
    assert obama1.shape == (dim,)
    assert np.linalg.norm(obama1) == pytest.approx(1.0, abs=1e-5)
    assert float(obama1 @ obama2) > float(obama1 @ biden) + 0.1


@pytest.mark.parametrize("model", ["edgeface_xs", "edgeface_xxs", "dlib_resnet"])
def test_int8_stays_close_to_fp32_on_real_faces(model, model_store, shared_data) -> None:
    fp32, int8 = _perception(model_store, model, "fp32"), _perception(model_store, model, "int8")
    for path in sorted((shared_data / PHOTOS).rglob("*.jp*g")):
        image = read_rgb(path)
        a, b = fp32.faces(image)[0], int8.faces(image)[0]
        assert float(a.embedding @ b.embedding) > 0.95, path


def test_flip_sum_makes_the_embedding_mirror_invariant(model_store, shared_data) -> None:
    p = _perception(model_store, "edgeface_xs", "fp32", flip=True)
    face = p.faces(read_rgb(shared_data / PHOTOS / "obama/obama.jpg"))[0]
    mirrored_chip = replace(face.chip, image=np.ascontiguousarray(face.chip.image[:, ::-1]))
    assert float(p.embedder([mirrored_chip])[0] @ face.embedding) > 0.9999


def test_empty_batch_gives_an_empty_matrix(perception) -> None:
    assert perception.embedder([]).shape == (0, 512)


def test_a_face_embeds_the_same_whoever_shares_the_frame(model_store, shared_data) -> None:
    p = _perception(model_store, "edgeface_xxs", "int8")
    obama = p.faces(read_rgb(shared_data / PHOTOS / "obama/obama.jpg"))[0]
    biden = p.faces(read_rgb(shared_data / PHOTOS / "biden/biden.jpg"))[0]
    alone = p.embedder([obama.chip])[0]
    together = p.embedder([biden.chip, obama.chip])[1]
    np.testing.assert_array_equal(alone, together)
