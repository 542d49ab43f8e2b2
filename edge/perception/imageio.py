"""Reading still images safely: every failure is an `ImageError`, never a partial face.

Checks come before work: the file's size before it is read, the image's declared size from its
header (edge/perception/imageheader.py) before it is decoded, so a small file that declares a
huge bitmap costs nothing. OpenCV happily decodes a truncated JPEG (grey bottom half) or PNG; a
half image can yield a wrong embedding, so truncation is detected from the container structure
before decoding too. After decoding, the bitmap must have the size the header declared.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageError
from edge.perception.imageheader import MAX_PIXELS, ImageHeader, read_header

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "decode_image", "load_image"]

# A still larger than this is not a face photo; refused before it is read into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
_JPEG_SOS, _JPEG_EOI = b"\xff\xda", b"\xff\xd9"
_PNG_IEND = b"IEND"


def _check_container(data: bytes, header: ImageHeader, name: str) -> None:
    if header.format == "JPEG":
        # Entropy-coded data escapes 0xFF bytes, so an EOI after the last scan marker means the
        # file was written to the end.
        last_scan = data.rfind(_JPEG_SOS)
        if last_scan < 0 or data.find(_JPEG_EOI, last_scan) < 0:
            raise ImageError(f"{name}: truncated JPEG (no end-of-image marker after the last scan)")
    elif header.format == "PNG" and data.rfind(_PNG_IEND) < 0:
        raise ImageError(f"{name}: truncated PNG (no IEND chunk)")


def _check_file_size(size: int, name: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large ({size / 2**20:.0f} MiB; at most {MAX_FILE_BYTES // 2**20} MiB)")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded bytes → RGB uint8 (H, W, 3); greyscale, alpha and 16-bit inputs are converted."""
    if not data:
        raise ImageError(f"{name}: empty file")
    _check_file_size(len(data), name)
    header = read_header(data, name)
    _check_container(data, header, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OPENCV_IO_MAX_IMAGE_PIXELS (edge/__init__.py) or a decoder fault
        raise ImageError(f"{name}: cannot decode image ({exc})") from exc
    if bgr is None:
        raise ImageError(f"{name}: not a readable {header.format} image (corrupt data)")
    # EXIF orientation may turn a JPEG by 90°; any other difference means the header lied.
    if (bgr.shape[1], bgr.shape[0]) not in ((header.width, header.height), (header.height, header.width)):
        raise ImageError(f"{name}: {header.format} header declares {header.width}x{header.height}, the data decodes to {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _check_file_size(size, str(path))
            data = f.read(MAX_FILE_BYTES + 1)  # a file that grows while read is still bounded
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a directory, not an image") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))
