"""int8 variants of the embedders, calibrated on real aligned face chips.

Chips are made by our own detector + FaceMesh + aligner from the crops in assets/calibration
(and their mirror images), so calibration sees exactly what the embedder sees at run time.

Recipe, chosen by measuring LFW fold 1 (`bench`-style sweep, figures in README):
- Conv: static QDQ, per-channel int8 weights, uint8 activations with ranges calibrated on the
  chips (the fast path of ONNX Runtime's x86/ARM kernels). dlib's ResNet is all Conv.
- EdgeFace's Linear layers (MatMul after LayerNorm): dynamic int8, i.e. the activation range is
  taken per input at run time. Their activations have per-token outliers that no static range
  covers: static QDQ there cost 1.3 points of accuracy and 6 points of TAR@FAR=1e-3, dynamic
  costs nothing measurable — and it is how the upstream EdgeFace `_q` checkpoint was quantised.
- The first Conv (the stem, reading the image) stays float: quantising it dropped the mean
  fp32↔int8 embedding cosine on real chips from 0.97 to 0.90 (worst chip 0.52), for a layer
  that is a few percent of the compute.
- LayerNorm, Softmax, GELU and activation×activation MatMuls (attention) stay float.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edge.config import AlignConfig, Config, DetectConfig, EmbedConfig, ModelsConfig
from edge.errors import ModelError
from edge.perception.embed import chips_to_tensor, embedder_spec
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.modelstore import ModelStore

STATIC_OPS = ("Conv",)
DYNAMIC_OPS = ("MatMul",)
# Where static Conv quantisation pays, measured on all 3,000 LFW pairs (accuracy / TAR@1e-3):
# EdgeFace-XS 99.43 / 99.13 with it vs 99.40 / 99.07 without (fp32 99.47 / 99.13), and faster;
# EdgeFace-XXS 99.33 / 98.87 with it vs 99.47 / 99.07 without (fp32 99.53 / 99.07), no faster.
# dlib's ResNet is all Conv, so it has no other int8 path.
STATIC_CONV = {"edgeface_xs": True, "edgeface_xxs": False, "dlib_resnet": True}


def calibration_chips(embedder: str, models_dir: Path, calibration_dir: Path) -> list[np.ndarray]:
    # ONNX Runtime for every stage, whatever is installed: the int8 model (and the thresholds
    # calibrated for it) must not depend on whether TFLite ran FaceMesh on this machine.
    cfg = Config(
        models=ModelsConfig(backend="onnxruntime"),
        detect=DetectConfig(model="full", min_score=0.6),
        align=AlignConfig(landmarks="mesh"),
        embed=EmbedConfig(model=embedder, precision="fp32", flip=False),
    )
    perception = Perception(cfg, ModelStore(models_dir), with_embedder=False)
    chips = []
    for path in sorted(calibration_dir.glob("*.jpg")):
        for face in perception.faces(load_image(path), embed=False)[:1]:
            chips.append(face.chip.image)
            chips.append(face.chip.image[:, ::-1])
    if len(chips) < 40:
        raise ModelError(f"{calibration_dir}: only {len(chips)} calibration chips; expected the committed set")
    return chips


class _ChipReader:
    """onnxruntime's CalibrationDataReader protocol: one batch-1 feed per call."""

    def __init__(self, input_name: str, tensors: np.ndarray) -> None:
        self._feeds = iter([{input_name: t[None]} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _first_conv(model_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [next(n.name for n in graph.node if n.op_type == "Conv")]


def _has_weight_matmul(model_path: Path) -> bool:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return any(n.op_type in DYNAMIC_OPS and any(i in weights for i in n.input) for n in graph.node)


def quantize_embedder(embedder: str, src: Path, out: Path, models_dir: Path, calibration_dir: Path) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = embedder_spec(embedder)
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared, static = Path(tmp) / "prepared.onnx", Path(tmp) / "static.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        if not STATIC_CONV[embedder]:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=list(DYNAMIC_OPS))
            return
        tensors = chips_to_tensor(calibration_chips(embedder, models_dir, calibration_dir), spec)
        quantize_static(
            str(prepared),
            str(static),
            _ChipReader(input_name, tensors),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(STATIC_OPS),
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_first_conv(prepared),
        )
        if _has_weight_matmul(static):
            # Per-tensor weights: per-channel dynamic MatMul measured 0.7 points worse on LFW.
            quantize_dynamic(str(static), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=list(DYNAMIC_OPS))
        else:
            shutil.copyfile(static, out)
