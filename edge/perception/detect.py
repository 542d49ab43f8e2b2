"""BlazeFace face detection: letterbox → model → anchor decode → weighted NMS.

The MediaPipe models ship only raw regressors; the SSD anchor layout and the decode below follow
MediaPipe's `face_detection_{short,full}_range_common.pbtxt` options (fixed-size anchors,
offsets 0.5, scales = input size). Weighted NMS averages overlapping boxes by score, which makes
keypoints markedly steadier than hard NMS — alignment quality depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge.perception.registry import DetectorSpec
from edge.perception.runtime import Session

# Keypoint order of both BlazeFace models (subject's left/right, not the image's).
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH, KP_RIGHT_EAR, KP_LEFT_EAR = range(6)
_RAW_SCORE_LIMIT = 80.0  # keeps exp() finite in float32
# Faces spanning less than this share of the frame's long side get a second, zoomed-in pass.
REFINE_BELOW = 0.2


@dataclass(frozen=True, slots=True, eq=False)
class Detection:
    """One face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    keypoints: np.ndarray = field(repr=False)  # (6, 2) float32, order KP_*
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] input coordinates, in the model's output order."""
    centres = []
    for stride, per_cell in zip(spec.strides, spec.anchors_per_cell, strict=True):
        cells = spec.input_size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe-style weighted NMS: each kept face is the score-weighted mean of its cluster."""
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    kept = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = remaining & (_iou(boxes[i], boxes) > iou_threshold)
        overlap[i] = True
        weights = scores[overlap][:, None]
        box = (boxes[overlap] * weights).sum(0) / weights.sum()
        pts = (points[overlap] * weights[:, :, None]).sum(0) / weights.sum()
        kept.append((box, pts, float(scores[i])))
        remaining &= ~overlap
    return kept


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the square model input (to map results back)."""

    scale: float  # model pixels per image pixel
    pad_x: float
    pad_y: float


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale with little aliasing, fast.

    INTER_AREA alone costs 1.2 ms for 1280×720 → 128×72 and 4.4 ms to 192×108; a bilinear step
    to twice the target and an exact 2× area step cost 0.15 ms and keep most of its smoothing.
    """
    h, w = image.shape[:2]
    if w > 4 * width and h > 4 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = shrink(image, nw, nh)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    return canvas, Letterbox(scale, float(px), float(py))


class FaceDetector:
    """`detector(rgb_image) -> list[Detection]`, best score first."""

    def __init__(
        self,
        session: Session,
        spec: DetectorSpec,
        min_score: float = 0.5,
        nms_iou: float = 0.3,
        refine_small: bool = True,
    ) -> None:
        self._session = session
        self._spec = spec
        self._input = session.inputs[0].name
        self._anchors = ssd_anchors(spec)
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.refine_small = refine_small

    def __call__(self, image: np.ndarray, refine: bool | None = None) -> list[Detection]:
        detections = self._detect(image)
        if not (self.refine_small if refine is None else refine):
            return detections
        return [self._refine(image, d) if self._is_small(image, d) else d for d in detections]

    def refined(self, image: np.ndarray, det: Detection) -> Detection:
        """The zoomed second pass for one detection, when it is small and refinement is on."""
        return self._refine(image, det) if self.refine_small and self._is_small(image, det) else det

    def _is_small(self, image: np.ndarray, det: Detection) -> bool:
        """True when the face spans less than REFINE_BELOW of the model input after letterboxing."""
        return max(det.width, det.height) / max(image.shape[:2]) < REFINE_BELOW

    def _refine(self, image: np.ndarray, det: Detection) -> Detection:
        """Re-detect on a crop where the face fills a third: tighter box, accurate keypoints.

        At the bottom of a model's scale range the box is loose and the keypoints drift by a
        third of the eye distance, which the aligner turns into a wrong chip.
        """
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
        half = 1.5 * max(det.width, det.height)
        h, w = image.shape[:2]
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        candidates = self._detect(image[y0:y1, x0:x1])
        if not candidates:
            return det
        shift = np.array([x0, y0], dtype=np.float32)
        moved = [
            Detection(
                (c.box[0] + x0, c.box[1] + y0, c.box[2] + x0, c.box[3] + y0), c.keypoints + shift, c.score
            )
            for c in candidates
        ]
        overlaps = _iou(np.array(det.box), np.array([c.box for c in moved]))
        best = int(np.argmax(overlaps))
        return moved[best] if overlaps[best] > 0.3 else det

    def _detect(self, image: np.ndarray) -> list[Detection]:
        size = self._spec.input_size
        canvas, lb = letterbox(image, size)
        tensor = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
        outputs = self._session.run({self._input: tensor})
        # Pick outputs by shape: names differ between the .tflite and converted .onnx.
        regressors = next(o for o in outputs if o.shape[-1] == 16).reshape(-1, 16)
        raw_scores = next(o for o in outputs if o.shape[-1] == 1).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        reg = regressors[keep] / size
        anchors = self._anchors[keep]
        centre = reg[:, 0:2] + anchors
        half = reg[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1) * size
        points = (reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]) * size
        detections = []
        for box, pts, score in weighted_nms(boxes, points, scores[keep], self.nms_iou):
            box_img = (box - [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]) / lb.scale
            pts_img = (pts - [lb.pad_x, lb.pad_y]) / lb.scale
            h, w = image.shape[:2]
            x1, y1 = max(0.0, box_img[0]), max(0.0, box_img[1])
            x2, y2 = min(float(w), box_img[2]), min(float(h), box_img[3])
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            detections.append(
                Detection((float(x1), float(y1), float(x2), float(y2)), pts_img.astype(np.float32), score)
            )
        return detections
