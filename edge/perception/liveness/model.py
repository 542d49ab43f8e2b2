"""The passive presentation-attack CNN: MiniFASNet (Silent-Face-Anti-Spoofing) on ONNX Runtime.

Each model was trained on the face box enlarged by a fixed factor around its centre (2.7 for
MiniFASNetV2, 4.0 for MiniFASNetV1SE) and resized to 80×80 BGR, 0..255 — the context around the
face (a phone's bezel, a hand, the screen's edge) is part of what it learned, so the crop must
be reproduced exactly. Where the enlarged box leaves the image the factor shrinks until it fits
and the box slides inside, as upstream does; on a tight face crop with no surroundings the model
therefore sees only the face (measured separately in docs/liveness.md).

Output: P(real) = softmax(logits)[1] (classes 0 and 2 are attack types). With both models the
score is the geometric mean, so either model confidently seeing an attack pulls it down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import ConfigError
from edge.perception.modelstore import ModelStore
from edge.perception.registry import LIVENESS_MODELS
from edge.perception.runtime import Session, open_session, resolve

INPUT = 80
REAL_CLASS = 1


@dataclass(frozen=True, slots=True)
class PassiveSpec:
    name: str  # manifest name prefix
    scale: float  # face box enlargement the weights were trained with


SPECS = {
    "v2": PassiveSpec("minifasnet_v2", 2.7),
    "v1se": PassiveSpec("minifasnet_v1se", 4.0),
}


def context_crop(image: np.ndarray, box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """The box enlarged `scale` times around its centre, clamped into the image, as 80×80."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    s = min(scale, w / bw, h / bh)  # shrink the context, never distort the face
    cw, ch = bw * s, bh * s
    left = min(max((x1 + x2) / 2 - cw / 2, 0.0), w - cw)
    top = min(max((y1 + y2) / 2 - ch / 2, 0.0), h - ch)
    l, t = round(left), round(top)
    r, b = max(l + 1, round(left + cw)), max(t + 1, round(top + ch))
    region = image[t:b, l:r]
    # INTER_LINEAR like upstream; the model's training crops were made that way.
    return cv2.resize(region, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR)


def softmax_real(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, REAL_CLASS] / e.sum(axis=1)


class PassiveModel:
    """`model(rgb_image, box) -> P(real)`; `crops(rgb, box)` + `score(crops)` split the work."""

    def __init__(self, sessions: list[tuple[Session, PassiveSpec]]) -> None:
        self._models = [(s, s.inputs[0].name, spec) for s, spec in sessions]

    @classmethod
    def from_store(
        cls, store: ModelStore, model: str, precision: str, threads: int = 1, backend: str = "auto"
    ) -> PassiveModel:
        if model not in LIVENESS_MODELS:
            raise ConfigError(f"liveness.model: must be one of {', '.join(LIVENESS_MODELS)} (got {model!r})")
        sessions = []
        for key in LIVENESS_MODELS[model]:
            spec = SPECS[key]
            name, chosen = resolve(backend, "liveness", f"{spec.name}_{precision}", store.records)
            sessions.append((open_session(store.path(name), chosen, threads), spec))
        return cls(sessions)

    def crops(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> list[np.ndarray]:
        """One 80×80 BGR crop per model (each model has its own context scale)."""
        return [context_crop(rgb, box, spec.scale)[:, :, ::-1] for _, _, spec in self._models]

    def score(self, crops: list[np.ndarray]) -> float:
        logs = []
        for (session, name, _), crop in zip(self._models, crops, strict=True):
            tensor = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)
            (logits,) = session.run({name: tensor})[:1]
            logs.append(math.log(max(float(softmax_real(logits)[0]), 1e-9)))
        return float(math.exp(sum(logs) / len(logs)))

    def __call__(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> float:
        return self.score(self.crops(rgb, box))
