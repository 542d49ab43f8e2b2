"""int8 (static QDQ) variants of the MiniFASNet liveness models.

Calibrated on the live face crops committed in assets/calibration, cut exactly as at run time
(our detector's box, enlarged by the model's context scale, 80×80 BGR) plus their mirror
images. Only live faces are there; activation ranges of attack images are of the same order
(same pixels range, same network), and docs/liveness.md reports the measured fp32 → int8 change
on the labelled crops and videos — not on anything this calibration saw.
Per-channel int8 weights, uint8 activations, MinMax ranges: the recipe that measured best for
the Conv embedders (models/quantize.py). The first Conv stays float like there: it reads raw
0..255 pixels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge.config import Config, DetectConfig, ModelsConfig
from edge.errors import ModelError
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.liveness.model import SPECS, context_crop
from edge.perception.modelstore import ModelStore


def calibration_tensors(scale: float, models_dir: Path, calibration_dir: Path) -> np.ndarray:
    # ONNX Runtime for every stage (see models/quantize.py): the build must not depend on TFLite.
    cfg = Config(models=ModelsConfig(backend="onnxruntime"), detect=DetectConfig(model="full", min_score=0.6))
    perception = Perception(cfg, ModelStore(models_dir), with_embedder=False)
    crops = []
    for path in sorted(calibration_dir.glob("*.jpg")):
        rgb = load_image(path)
        for face in perception.faces(rgb, embed=False)[:1]:
            bgr = context_crop(rgb, face.detection.box, scale)[:, :, ::-1]
            crops.extend([bgr, bgr[:, ::-1]])
    if len(crops) < 40:
        raise ModelError(f"{calibration_dir}: only {len(crops)} calibration crops; expected the committed set")
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)


class _Reader:
    def __init__(self, name: str, tensors: np.ndarray) -> None:
        self._feeds = iter([{name: t[None]} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_liveness(variant: str, src: Path, out: Path, models_dir: Path, calibration_dir: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tensors = calibration_tensors(SPECS[variant].scale, models_dir, calibration_dir)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        first_conv = next(n.name for n in graph.node if n.op_type == "Conv")
        quantize_static(
            str(prepared),
            str(out),
            _Reader(graph.input[0].name, tensors),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[first_conv],
        )
