"""Face embeddings: aligned chips → L2-normalised vectors, one interface for every embedder.

Each embedder is described by an `EmbedderSpec` (chip template, input normalisation, size);
the weights come from the model store in fp32 or int8. With `flip`, the chip and its mirror
image are embedded in one batch and summed: test-time augmentation that doubles the embedding
cost; measured on LFW it gains dlib 0.3 points and the EdgeFace models nothing, so it is off by
default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.align import FaceChip
from edge.runtime import Session


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    name: str
    template: str  # chip template in edge.align.TEMPLATES
    dim: int
    mean: float  # model input = (pixel - mean) / std, pixel in 0..255 RGB
    std: float
    licence: str
    # Cosine thresholds at FAR 1e-3 on the 3,000 LFW pairs (pooled `threshold_at_far_1e-3` of
    # `facegate eval lfw`, FaceMesh alignment, flip off), per precision.
    thresholds: dict[str, float]


EMBEDDERS = {
    "edgeface_xs": EmbedderSpec("edgeface_xs", "arcface", 512, 127.5, 127.5, "BSD-3-Clause; trained on WebFace12M (research-only data)", {"fp32": 0.2361, "int8": 0.2216}),
    "edgeface_xxs": EmbedderSpec("edgeface_xxs", "arcface", 512, 127.5, 127.5, "BSD-3-Clause; trained on WebFace12M (research-only data)", {"fp32": 0.2496, "int8": 0.2419}),
    "dlib_resnet": EmbedderSpec("dlib_resnet", "dlib", 128, 0.0, 1.0, "CC0-1.0", {"fp32": 0.9166, "int8": 0.9159}),
}


def embedder_spec(name: str) -> EmbedderSpec:
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; valid: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name]


def chips_to_tensor(images: list[np.ndarray], spec: EmbedderSpec) -> np.ndarray:
    batch = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    return (batch - spec.mean) / spec.std


class Embedder:
    """`embedder(chips) -> (n, dim) float32`, rows L2-normalised (cosine = dot product)."""

    def __init__(self, session: Session, spec: EmbedderSpec, flip: bool = True) -> None:
        self._session = session
        self._input = session.inputs[0].name
        self.spec = spec
        self.flip = flip

    def __call__(self, chips: list[FaceChip]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        images = [c.image for c in chips]
        if self.flip:
            images += [c.image[:, ::-1] for c in chips]
        out = self._session.run({self._input: chips_to_tensor(images, self.spec)})[0]
        out = out.reshape(len(images), -1).astype(np.float32)
        if self.flip:
            out = out[: len(chips)] + out[len(chips) :]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
