"""Reading still images safely: every failure is an `ImageError`, never a partial face.

OpenCV happily decodes a truncated JPEG (grey bottom half) or PNG; a half image can yield a
wrong embedding, so truncation is detected from the container structure before decoding.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageError

MAX_PIXELS = 80_000_000  # refuses decompression bombs long before memory runs out
_JPEG_SOS, _JPEG_EOI = b"\xff\xda", b"\xff\xd9"
_PNG_MAGIC, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND"


def _check_container(data: bytes, name: str) -> None:
    if data[:3] == b"\xff\xd8\xff":
        # Entropy-coded data escapes 0xFF bytes, so an EOI after the last scan marker means the
        # file was written to the end.
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan < 0 or data.find(_JPEG_EOI, last_scan) < 0:
            raise ImageError(f"{name}: truncated JPEG (no end-of-image marker after the last scan)")
    elif data[:8] == _PNG_MAGIC and data.rfind(_PNG_IEND) < 0:
        raise ImageError(f"{name}: truncated PNG (no IEND chunk)")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded bytes → RGB uint8 (H, W, 3); greyscale, alpha and 16-bit inputs are converted."""
    if not data:
        raise ImageError(f"{name}: empty file")
    _check_container(data, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})") from exc
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupt data)")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({bgr.shape[1]}x{bgr.shape[0]})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: Path) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a directory, not an image") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))
