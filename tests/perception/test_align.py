from __future__ import annotations

import numpy as np

from edge.config import Config
from edge.perception.align import ARCFACE_112, Aligner, dlib_template, umeyama
from tests.conftest import read_rgb


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = umeyama(src, src @ rot.T + shift)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_umeyama_never_mirrors() -> None:
    src = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    m = umeyama(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


def test_dlib_template_is_dlibs_150px_chip() -> None:
    t = dlib_template(150, 0.25)
    np.testing.assert_allclose(t[0], [37.0575, 46.3727], atol=1e-3)  # right eye outer (image left)
    np.testing.assert_allclose(t[4], [74.0112, 87.7798], atol=1e-3)  # nose base


def test_arcface_chip_puts_the_eyes_on_the_template(perception, shared_data) -> None:
    image = read_rgb(shared_data / "face_recognition/images/obama-720p.jpg")
    face = perception.faces(image, embed=False)[0]
    chip = face.chip
    assert chip.image.shape == (112, 112, 3) and chip.landmark_source == "mesh"
    pts = face.mesh.points[:, :2]
    five = np.stack(
        [pts[[33, 133, 159, 145]].mean(0), pts[[263, 362, 386, 374]].mean(0), pts[1], pts[61], pts[291]]
    )
    in_chip = five @ chip.transform[:, :2].T + chip.transform[:, 2]
    # A least-squares fit of 5 points cannot hit all of them on a real face (this one smiles
    # broadly, so the mouth corners sit ~7 px wide of the template); the eyes, which carry most
    # identity, must land within 4 px and the whole fit within 5 % of the 112 px chip.
    residual = np.linalg.norm(in_chip - ARCFACE_112, axis=1)
    assert residual[:2].max() < 4.0, residual
    assert np.sqrt((residual**2).mean()) < 6.0, residual


def test_keypoint_alignment_works_without_a_mesh(model_store, shared_data) -> None:
    from dataclasses import replace

    from edge.perception.faces import Perception

    cfg = Config()
    cfg = replace(cfg, align=replace(cfg.align, landmarks="keypoints"))
    p = Perception(cfg, model_store, with_embedder=False)
    face = p.faces(read_rgb(shared_data / "face_recognition/images/obama-720p.jpg"), embed=False)[0]
    assert face.mesh is None and face.chip.landmark_source == "keypoints"
    assert Aligner("dlib")(read_rgb(shared_data / "face_recognition/images/obama-720p.jpg"), face.detection).image.shape == (150, 150, 3)
