"""The perception core wired from config: image → faces with quality and embeddings.

detect → (FaceMesh) → align → quality → embed. Stages stay independent classes; this module
only builds them from `Config` and the model store and runs them in order, timing each.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.perception.align import Aligner, FaceChip
from edge.perception.detect import Detection, FaceDetector
from edge.perception.embed import Embedder, embedder_spec
from edge.perception.landmarks import FaceMesh, FaceMeshModel, mesh_keypoints
from edge.perception.modelstore import ModelStore
from edge.perception.quality import Quality, QualityGate
from edge.perception.registry import DETECTORS
from edge.perception.runtime import open_session, resolve


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    detection: Detection
    mesh: FaceMesh | None
    chip: FaceChip
    quality: Quality
    embedding: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, with_embedding: bool = True) -> dict[str, object]:
        d = self.detection
        out: dict[str, object] = {
            "box": [round(v, 1) for v in d.box],
            "keypoints": [[round(float(x), 1), round(float(y), 1)] for x, y in d.keypoints],
            "score": round(d.score, 4),
            "landmarks": self.chip.landmark_source,
            "quality": self.quality.to_dict(),
        }
        if with_embedding and self.embedding is not None:
            out["embedding"] = [round(float(v), 6) for v in self.embedding]
        return out


TIMING_WINDOW = 10_000


def embedder_model_name(cfg: Config) -> str:
    return f"{cfg.embed.model}_{cfg.embed.precision}"


class Perception:
    """`perception.faces(rgb_image) -> list[Face]`, largest face first."""

    def __init__(self, cfg: Config, store: ModelStore | None = None, with_embedder: bool = True) -> None:
        self.cfg = cfg
        self.store = store or ModelStore(Path(cfg.models.dir) if cfg.models.dir else None)
        threads, records, backend = cfg.models.threads, self.store.records, cfg.models.backend
        name, chosen = resolve(backend, "detector", f"detector_{cfg.detect.model}", records)
        # Manifest name of each model this instance runs, by role (events report their versions).
        self.model_names = {"detector": name, "embedder": embedder_model_name(cfg)}
        self.detector = FaceDetector(
            open_session(self.store.path(name), chosen, threads),
            DETECTORS[cfg.detect.model],
            min_score=cfg.detect.min_score,
            nms_iou=cfg.detect.nms_iou,
            refine_small=cfg.detect.refine_small,
        )
        self.mesh: FaceMeshModel | None = None
        if cfg.align.landmarks == "mesh":
            name, chosen = resolve(backend, "landmarks", "facemesh", records)
            self.model_names["landmarks"] = name
            self.mesh = FaceMeshModel(open_session(self.store.path(name), chosen, threads))
        spec = embedder_spec(cfg.embed.model)
        self.aligner = Aligner(spec.template)
        self.quality = QualityGate(cfg.quality)
        self.embedder: Embedder | None = None
        if with_embedder:
            # Embedders exist only as ONNX (TFLite twins exist for detection, landmarks, liveness).
            session = open_session(self.store.path(self.model_names["embedder"]), "onnxruntime", threads)
            self.embedder = Embedder(session, spec, flip=cfg.embed.flip)
        # The last TIMING_WINDOW calls per stage: a daemon runs for months, so no unbounded lists.
        self.timings_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=TIMING_WINDOW))
        self.timing_counts: Counter[str] = Counter()  # calls ever timed, per stage (for /metrics)

    def _timed(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.timings_ms[stage].append((now - started) * 1000.0)
        self.timing_counts[stage] += 1
        return now

    def detect(self, image: np.ndarray, refine: bool | None = None) -> list[Detection]:
        """Detections, largest first, at most `[detect] max_faces`.

        `refine=False` skips the zoomed second pass for small faces: the video runtime tracks
        every face but refines (`refined`) only those it is about to describe.
        """
        t = time.perf_counter()
        detections = self.detector(image, refine)
        detections.sort(key=lambda d: d.width * d.height, reverse=True)
        detections = detections[: self.cfg.detect.max_faces]
        self._timed("detect", t)
        return detections

    def refined(self, image: np.ndarray, det: Detection) -> Detection:
        """A small face re-detected on a zoomed crop (`[detect] refine_small`): FaceMesh fails on
        far more loose boxes without it (crowd clip: 112 vs 49 of 310 faces unconfirmed)."""
        t = time.perf_counter()
        out = self.detector.refined(image, det)
        self._timed("refine", t)
        return out

    def describe(
        self, image: np.ndarray, det: Detection, previous: tuple[FaceMesh, tuple[float, float]] | None = None, fallback: bool = True
    ) -> Face | None:
        """Landmarks, aligned chip and quality for one detection (no embedding yet).

        `previous` = (the same face's mesh in an earlier frame, how far its box moved since):
        the landmarks are then found from that mesh instead of from the detection. When that
        fails, `fallback` says whether to start again from the detection (None if not).
        """
        t = time.perf_counter()
        mesh = None
        if self.mesh is not None and previous is not None:
            mesh = self.mesh.follow(image, *previous)
            if mesh is not None:
                # The unrefined detection's keypoints are loose on small faces; quality (eye
                # distance, pose) reads the keypoints, so take them from the mesh.
                det = Detection(det.box, mesh_keypoints(mesh), det.score)
        if self.mesh is not None and mesh is None:
            if previous is not None and not fallback:
                self._timed("landmarks", t)
                return None
            if previous is not None:
                det = self.refined(image, det)
                t = time.perf_counter()
            mesh = self.mesh(image, det)
        t = self._timed("landmarks", t)
        chip = self.aligner(image, det, mesh)
        t = self._timed("align", t)
        # FaceMesh finding nothing is either a detector false positive or a hard face (deep
        # shadow, near profile); keep it on keypoint alignment but never enroll from it.
        confirmed = self.mesh is None or mesh is not None
        face = Face(det, mesh, chip, self.quality(det, chip, landmarks_confirmed=confirmed))
        self._timed("quality", t)
        return face

    def embed(self, faces: list[Face]) -> list[Face]:
        """The same faces with their embeddings filled in."""
        if self.embedder is None or not faces:
            return faces
        t = time.perf_counter()
        vectors = self.embedder([f.chip for f in faces])
        self._timed("embed", t)
        return [Face(f.detection, f.mesh, f.chip, f.quality, vectors[i]) for i, f in enumerate(faces)]

    def warm_up(self) -> None:
        """Runs every model once on a synthetic frame: ONNX Runtime's first run of a session
        allocates and picks kernels (tens of ms), which must not land on the first person at
        the door. Timings of the warm-up are discarded."""
        image = np.full((480, 640, 3), 128, np.uint8)
        kp = np.array([[290, 220], [350, 220], [320, 250], [320, 280], [260, 230], [380, 230]], np.float32)
        self.detect(image)
        self.embed([self.describe(image, Detection((250.0, 170.0, 390.0, 310.0), kp, 0.9))])  # type: ignore[list-item]
        self.timings_ms.clear()

    def faces(self, image: np.ndarray, embed: bool = True) -> list[Face]:
        faces = [self.describe(image, det) for det in self.detect(image)]
        faces = [f for f in faces if f is not None]
        return self.embed(faces) if embed else faces
