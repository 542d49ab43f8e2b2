"""An image's format and size from its header bytes, before anything is decoded.

A 140 KB PNG can declare 12000×12000 pixels; OpenCV allocates the whole bitmap (≈ 430 MB as
BGR, twice that with the RGB copy) before it can say the image is too large. So the size is
read here from the container — JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X, BMP, PNM, TIFF IFD0 —
and refused before `cv2.imdecode` runs. OpenCV has no header-only API, and no maintained
package on PyPI does just this without a decoder of its own behind it (Pillow would be a
second image stack to keep patched), hence this small parser.

Any other format is refused, not decoded "with care": OpenCV reads a dozen more (OpenEXR,
JPEG 2000, Radiance HDR, Sun raster, GIF...) whose size we cannot check first, and
`IMREAD_REDUCED_*` only shrinks the result after the full-size decode. The second line is
OpenCV's own `OPENCV_IO_MAX_IMAGE_PIXELS`, set to the same bound in `edge/__init__.py`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edge.errors import ImageError

MAX_PIXELS = 80_000_000  # width × height; a 12000×12000 declaration is refused unread
MAX_SIDE = 65_535  # JPEG's limit; a longer side in another format is a strip, never a face photo
FORMATS = ("JPEG", "PNG", "WebP", "BMP", "PNM", "TIFF")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOS = 0xDA
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length field


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str  # one of FORMATS
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """The format and declared size of `data`; ImageError for an unknown format, a truncated or
    malformed header, or a size over MAX_PIXELS."""
    header = _parse(data, name)
    if header.width <= 0 or header.height <= 0 or max(header.width, header.height) > MAX_SIDE:
        raise ImageError(f"{name}: {header.format} header declares an impossible size {header.width}x{header.height}")
    if header.pixels > MAX_PIXELS:
        raise ImageError(
            f"{name}: image too large ({header.width}x{header.height} = {header.pixels / 1e6:.0f} Mpx declared by its "
            f"{header.format} header; at most {MAX_PIXELS / 1e6:.0f} Mpx): scale it down before enrolling"
        )
    return header


def _parse(data: bytes, name: str) -> ImageHeader:
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data, name)
    if data[:8] == _PNG_MAGIC:
        return _png(data, name)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data, name)
    if data[:2] == b"BM":
        return _bmp(data, name)
    if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
        return _pnm(data, name)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data, name)
    raise ImageError(f"{name}: not a supported image format (facegate reads {', '.join(FORMATS)})")


def _short(name: str, fmt: str) -> ImageError:
    return ImageError(f"{name}: truncated {fmt} header")


def _png(data: bytes, name: str) -> ImageHeader:
    # The first chunk must be IHDR (PNG spec 5.6); the decoder trusts nothing else for the size.
    if len(data) < 24:
        raise _short(name, "PNG")
    if data[12:16] != b"IHDR":
        raise ImageError(f"{name}: malformed PNG (first chunk is not IHDR)")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("PNG", width, height)


def _jpeg(data: bytes, name: str) -> ImageHeader:
    """Walks the marker segments up to the first scan; the one SOF there is the frame's size."""
    pos, found = 2, None
    while True:
        # Markers may be padded with any number of 0xFF fill bytes (ITU T.81 B.1.1.2).
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            raise _short(name, "JPEG")
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > len(data):
            raise _short(name, "JPEG")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > len(data):
            raise _short(name, "JPEG")
        if marker in _JPEG_SOF:
            if found is not None:
                # A hierarchical JPEG has several frames of different sizes; OpenCV would take one we did not check.
                raise ImageError(f"{name}: JPEG with more than one frame header (hierarchical JPEG) is not supported")
            if length < 8:
                raise _short(name, "JPEG")
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            if height == 0:
                raise ImageError(f"{name}: JPEG whose height comes later (DNL marker) is not supported")
            found = ImageHeader("JPEG", width, height)
        elif marker == _JPEG_SOS:
            if found is None:
                raise ImageError(f"{name}: malformed JPEG (scan before any frame header)")
            return found
        pos += length


def _webp(data: bytes, name: str) -> ImageHeader:
    if len(data) < 30:
        raise _short(name, "WebP")
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8X":
        # Extended format: the canvas size, 24-bit little-endian fields holding size - 1.
        width = 1 + int.from_bytes(body[4:7], "little")
        height = 1 + int.from_bytes(body[7:10], "little")
    elif chunk == b"VP8L":
        if body[0] != 0x2F:
            raise ImageError(f"{name}: malformed WebP (bad VP8L signature)")
        bits = int.from_bytes(body[1:5], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise ImageError(f"{name}: malformed WebP (bad VP8 start code)")
        w, h = struct.unpack("<HH", body[6:10])
        width, height = w & 0x3FFF, h & 0x3FFF  # the top two bits are a scale hint
    else:
        raise ImageError(f"{name}: malformed WebP (unknown first chunk {chunk!r})")
    return ImageHeader("WebP", width, height)


def _bmp(data: bytes, name: str) -> ImageHeader:
    if len(data) < 26:
        raise _short(name, "BMP")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER (OS/2): unsigned 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    elif dib >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        height = abs(height)  # negative = rows stored top-down
    else:
        raise ImageError(f"{name}: malformed BMP (info header of {dib} bytes)")
    return ImageHeader("BMP", width, height)


def _pnm(data: bytes, name: str) -> ImageHeader:
    """P1-P6: magic, then width and height as ASCII numbers between whitespace and # comments."""
    fields: list[int] = []
    pos = 2
    while len(fields) < 2:
        while pos < len(data) and (data[pos:pos + 1].isspace() or data[pos] == ord("#")):
            if data[pos] == ord("#"):
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit() and pos - start < 10:
            pos += 1
        if pos == start or pos >= len(data):
            raise _short(name, "PNM")
        fields.append(int(data[start:pos]))
    return ImageHeader("PNM", fields[0], fields[1])


def _tiff(data: bytes, name: str) -> ImageHeader:
    """The first IFD's ImageWidth (256) and ImageLength (257): the page OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise _short(name, "TIFF")
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd + 2 > len(data):
        raise _short(name, "TIFF")
    (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
    sides: dict[int, int] = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
        if len(entry) < 12:
            raise _short(name, "TIFF")
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if tag in (256, 257) and n == 1:
            if kind == 3:  # SHORT, left-justified in the value field
                (sides[tag],) = struct.unpack(order + "H", entry[8:10])
            elif kind == 4:  # LONG
                (sides[tag],) = struct.unpack(order + "I", entry[8:12])
    if 256 not in sides or 257 not in sides:
        raise ImageError(f"{name}: malformed TIFF (no image width or length in the first directory)")
    return ImageHeader("TIFF", sides[256], sides[257])
