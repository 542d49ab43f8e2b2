"""Oracle test: our numpy/onnx conversion of dlib's face-recognition ResNet must
reproduce dlib's own descriptors on real, dlib-aligned LFW faces.

dlib is used here only as the reference implementation (``pip install dlib-bin``);
neither the converter nor the runtime model depends on it.

Measured on the dev box (dlib-bin 20.0.1, onnxruntime 1.32, 1 thread): max |diff|
about 4e-7 over 20 people (random-noise chips give the same), min cosine 1 - 1e-8,
i.e. plain float32 rounding noise from different summation orders.  Descriptor
entries are ~0.1 in magnitude, so ATOL=1e-5 leaves >20x headroom for other CPUs'
SIMD paths while still catching any real conversion error (a wrong padding,
channel order or mean shifts outputs by 1e-2 or more).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from models.dlib_resnet import build_dlib_resnet_onnx
from tests.conftest import unavailable

NUM_PEOPLE = 20
ATOL = 1e-5
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def dlib() -> ModuleType:
    try:
        import dlib as dlib_mod
    except ImportError:
        unavailable("dlib not importable; pip install dlib-bin")
    return dlib_mod


@pytest.fixture(scope="module")
def lfw_dir(shared_data: Path) -> Path:
    return shared_data / "lfw" / "images"


@pytest.fixture(scope="module")
def model_files() -> tuple[str, str]:
    import face_recognition_models as frm

    return frm.face_recognition_model_location(), frm.pose_predictor_five_point_model_location()


@pytest.fixture(scope="module")
def onnx_session(tmp_path_factory: pytest.TempPathFactory, model_files: tuple[str, str]):
    import onnxruntime as ort

    out = tmp_path_factory.mktemp("dlib_onnx") / "dlib_resnet.onnx"
    build_dlib_resnet_onnx(Path(model_files[0]), out)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic and representative of the edge box
    return ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def aligned_chips(dlib: ModuleType, lfw_dir: Path, model_files: tuple[str, str]) -> list[tuple[str, np.ndarray]]:
    """One dlib-aligned 150x150 chip for each of NUM_PEOPLE people spread over LFW."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(model_files[1])
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())
    step = max(1, len(people) // NUM_PEOPLE)
    chips: list[tuple[str, np.ndarray]] = []
    for person in people[::step] + people:  # fall back to the rest if HOG misses some
        if len(chips) == NUM_PEOPLE:
            break
        if any(name == person.name for name, _ in chips):
            continue
        for jpg in sorted(person.glob(f"{person.name}_*.jpg"))[:3]:
            img = dlib.load_rgb_image(str(jpg))
            dets = detector(img, 1)
            if dets:
                shape = predictor(img, dets[0])
                chip = dlib.get_face_chip(img, shape, size=150, padding=0.25)
                chips.append((person.name, np.ascontiguousarray(chip)))
                break
    assert len(chips) == NUM_PEOPLE, f"only {len(chips)} faces detected"
    return chips


def _to_input(chips: list[np.ndarray]) -> np.ndarray:
    # HWC uint8 RGB -> NCHW float32 0..255, the model's documented input contract
    return np.stack(chips).transpose(0, 3, 1, 2).astype(np.float32)


def test_model_io_contract(onnx_session) -> None:
    (inp,), (out,) = onnx_session.get_inputs(), onnx_session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("input", "tensor(float)", [3, 150, 150])
    assert (out.name, out.shape[1:]) == ("embedding", [128])
    assert isinstance(inp.shape[0], str) and isinstance(out.shape[0], str)  # dynamic batch


def test_descriptors_match_dlib_on_lfw(dlib: ModuleType, onnx_session, aligned_chips, model_files) -> None:
    recognizer = dlib.face_recognition_model_v1(model_files[0])
    max_abs, min_cos = 0.0, 1.0
    ours_single = []
    for name, chip in aligned_chips:
        # the overload taking an already aligned 150x150 chip, no jitter
        ref = np.asarray(recognizer.compute_face_descriptor(chip), dtype=np.float64)
        ours = onnx_session.run(["embedding"], {"input": _to_input([chip])})[0][0].astype(np.float64)
        ours_single.append(ours)
        diff = float(np.abs(ref - ours).max())
        cos = float(ref @ ours / (np.linalg.norm(ref) * np.linalg.norm(ours)))
        assert diff < ATOL, f"{name}: max|diff|={diff:.3g}"
        assert cos > MIN_COSINE, f"{name}: cosine={cos:.9f}"
        max_abs, min_cos = max(max_abs, diff), min(min_cos, cos)
    print(f"\n{len(aligned_chips)} LFW faces: max|onnx-dlib|={max_abs:.3g}, 1-min cosine={1 - min_cos:.3g}")

    # the whole set as one batch must give the same answers as one-by-one
    batched = onnx_session.run(["embedding"], {"input": _to_input([c for _, c in aligned_chips])})[0]
    np.testing.assert_allclose(batched, np.stack(ours_single), atol=ATOL, rtol=0)


def test_our_dlib_chip_embeds_like_dlibs_own_chip(dlib: ModuleType, onnx_session, aligned_chips, lfw_dir, model_store) -> None:
    """FaceMesh landmarks mapped onto dlib's template must give dlib-equivalent chips."""
    from dataclasses import replace

    from edge.config import Config
    from edge.perception.faces import Perception
    from edge.perception.imageio import load_image

    cfg = Config()
    ours = Perception(replace(cfg, embed=replace(cfg.embed, model="dlib_resnet")), model_store, with_embedder=False)
    cosines = []
    for name, chip in aligned_chips:
        image = load_image(sorted((lfw_dir / name).glob("*.jpg"))[0])
        face = ours.faces(image, embed=False)[0]
        a = onnx_session.run(["embedding"], {"input": _to_input([chip])})[0][0]
        b = onnx_session.run(["embedding"], {"input": _to_input([face.chip.image])})[0][0]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    # Same-person dlib descriptors from different photos score ~0.93; alignment noise must stay
    # well inside that.
    assert np.median(cosines) > 0.97, cosines
    assert min(cosines) > 0.93, cosines
