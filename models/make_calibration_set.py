"""Developer script, run once: cut the int8 calibration face crops committed in assets/calibration.

Static int8 quantisation needs real faces to learn activation ranges. The crops come only from
permissively licensed sources (listed in NOTICE): the MIT-licensed example photos and video of
ageitgey/face_recognition and timesler/facenet-pytorch, and the CC BY 4.0 head-pose clip of
intel-iot-devkit/sample-videos. Each crop is the face box grown 1.8x, at most 160 px, so the
build still exercises detection and alignment on them and the set stays under 1 MB.

    .venv/bin/python models/make_calibration_set.py --data ../shared/data --out assets/calibration
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edge.perception.detect import FaceDetector
from edge.perception.imageio import load_image
from edge.perception.registry import DETECTORS
from edge.perception.runtime import open_session

SOURCES_STILL = "face_recognition/images"
SOURCES_VIDEO = (
    ("videos/facenet_pytorch_video.mp4", 4),  # (file, keep every Nth frame)
    ("videos/intel_head-pose-face-detection-female.gif", 2),
)
CROP_GROW = 1.8
CROP_MAX = 160


def crop_face(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * CROP_GROW
    h, w = image.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    crop = image[b : int(min(h, cy + side / 2)), a : int(min(w, cx + side / 2))]
    scale = min(1.0, CROP_MAX / max(crop.shape[:2]))
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def frames(path: Path, every: int):
    cap = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index % every == 0:
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1
    cap.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("assets/calibration"))
    parser.add_argument("--detector", type=Path, required=True, help="detector_full.onnx")
    args = parser.parse_args()
    detector = FaceDetector(open_session(args.detector), DETECTORS["full"], min_score=0.7)
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted((args.data / SOURCES_STILL).rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or "obama-" in path.name:
            continue  # the obama-NNNp files are one photo at four sizes
        image = load_image(path)
        for k, det in enumerate(detector(image)):
            crop = crop_face(image, det.box)
            cv2.imwrite(str(args.out / f"still_{path.parent.name}_{path.stem}_{k}.jpg"), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
            written += 1
    for rel, every in SOURCES_VIDEO:
        for index, image in frames(args.data / rel, every):
            for k, det in enumerate(detector(image)):
                crop = crop_face(image, det.box)
                name = f"video_{Path(rel).stem[:12]}_{index:03d}_{k}.jpg"
                cv2.imwrite(str(args.out / name), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
                written += 1
    print(f"wrote {written} crops to {args.out}")


if __name__ == "__main__":
    main()
