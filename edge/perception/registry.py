"""The models config and CLI choose from, by name: embedders, detectors, liveness models,
precisions and backends.

The config tables (`edge.config`) and the `facegate` options take their choices from here, so a
model added here is selectable everywhere at once. Plain data only: this module imports no
inference runtime, OpenCV or numpy, so checking a config never loads them.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("int8", "fp32")  # the weights a model is built in (models/build.py)
# `[models] backend`: "auto" picks per role (edge.perception.runtime.resolve); the other two force one.
BACKENDS = ("auto", "onnxruntime", "tflite")


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    name: str
    template: str  # chip template in edge.align.TEMPLATES
    dim: int
    mean: float  # model input = (pixel - mean) / std, pixel in 0..255 RGB
    std: float
    licence: str


EMBEDDERS = {
    "edgeface_xs": EmbedderSpec("edgeface_xs", "arcface", 512, 127.5, 127.5, "BSD-3-Clause; trained on WebFace12M (research-only data)"),
    "edgeface_xxs": EmbedderSpec("edgeface_xxs", "arcface", 512, 127.5, 127.5, "BSD-3-Clause; trained on WebFace12M (research-only data)"),
    "dlib_resnet": EmbedderSpec("dlib_resnet", "dlib", 128, 0.0, 1.0, "CC0-1.0"),
}


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Anchor layout of one BlazeFace variant."""

    name: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]


DETECTORS = {
    # 128 px, faces within ~2 m of a selfie/kiosk camera.
    "short": DetectorSpec("short", 128, (8, 16), (2, 6)),
    # 192 px, faces up to ~5 m: door cameras, corridors.
    "full": DetectorSpec("full", 192, (4,), (1,)),
}

# `[liveness] model` -> the passive CNNs it runs (edge.perception.liveness.model.SPECS keys).
LIVENESS_MODELS = {"v1se": ("v1se",), "v2": ("v2",), "both": ("v1se", "v2")}
