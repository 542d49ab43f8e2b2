"""Image sizes are read from headers and refused before decoding: decompression bombs cost nothing."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ImageError
from edge.perception.imageheader import MAX_PIXELS, read_header
from edge.perception.imageio import MAX_FILE_BYTES, decode_image, load_image

REPO = Path(__file__).resolve().parents[2]
IMAGE = np.random.default_rng(7).integers(0, 255, (48, 64, 3)).astype(np.uint8)
# (suffix, imencode params, format) for every format facegate reads.
ENCODINGS = [
    (".jpg", [], "JPEG"), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "JPEG"), (".png", [], "PNG"),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "WebP"), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "WebP"),
    (".bmp", [], "BMP"), (".ppm", [], "PNM"), (".tiff", [], "TIFF"),
]
MIB = 2**20


def encoded(suffix: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(suffix, IMAGE, params or [])
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A real, valid greyscale PNG of width×height zeros: ~1 KB per 1000×1000 px on disk."""
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def webp_vp8x(width: int, height: int) -> bytes:
    """An extended WebP whose VP8X canvas says width×height around a real 64×48 frame."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + encoded(".webp", [cv2.IMWRITE_WEBP_QUALITY, 80])[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body


def resized(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """`data` with its header's size fields rewritten (the pixel data stays 64×48)."""
    b = bytearray(data)
    if fmt == "JPEG":
        i = b.find(b"\xff\xc0") if b.find(b"\xff\xc0") >= 0 else b.find(b"\xff\xc2")
        b[i + 5:i + 9] = struct.pack(">HH", height, width)
    elif fmt == "BMP":
        b[18:26] = struct.pack("<ii", width, height)
    elif fmt == "PNM":
        return data.replace(b"64 48", f"{width} {height}".encode(), 1)
    elif fmt == "WebP" and b[12:16] == b"VP8L":
        b[21:25] = ((width - 1) | (height - 1) << 14).to_bytes(4, "little")
    else:
        raise AssertionError(fmt)
    return bytes(b)


@pytest.mark.parametrize(("suffix", "params", "fmt"), ENCODINGS, ids=[f"{e[2]}{e[1]}" for e in ENCODINGS])
def test_every_supported_header_gives_the_size_the_decoder_finds(suffix, params, fmt) -> None:
    data = encoded(suffix, params)
    header = read_header(data, "x")
    assert (header.format, header.width, header.height) == (fmt, 64, 48)
    assert decode_image(data, "x").shape == (48, 64, 3)


def test_extended_webp_and_greyscale_pnm_headers_are_read() -> None:
    assert read_header(webp_vp8x(64, 48)).format == "WebP"
    assert decode_image(webp_vp8x(64, 48)).shape == (48, 64, 3)
    ok, pgm = cv2.imencode(".pgm", IMAGE[:, :, 0])
    assert read_header(b"P5\n# a comment\n64 48\n255\n" + pgm.tobytes().split(b"255\n", 1)[1]).width == 64


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (lambda: bomb_png(12000, 12000), "PNG"),
        (lambda: resized(encoded(".jpg"), "JPEG", 12000, 12000), "JPEG"),
        (lambda: resized(encoded(".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), "JPEG", 12000, 12000), "JPEG"),
        (lambda: webp_vp8x(9000, 9000), "WebP"),
        (lambda: resized(encoded(".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), "WebP", 16384, 16384), "WebP"),
        (lambda: resized(encoded(".bmp"), "BMP", 12000, -12000), "BMP"),
        (lambda: resized(encoded(".ppm"), "PNM", 12000, 12000), "PNM"),
    ],
    ids=["png", "jpeg", "progressive-jpeg", "webp-vp8x", "webp-vp8l", "bmp-top-down", "ppm"],
)
def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(data, fmt) -> None:
    with pytest.raises(ImageError, match=f"image too large .* declared by its {fmt} header"):
        decode_image(data(), "bomb")


def test_a_12000_px_png_costs_no_memory_to_refuse(tmp_path) -> None:
    """Peak RSS (VmHWM) of a fresh process, before and after refusing the 140 KB bomb."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))
    assert bomb.stat().st_size < 200_000
    script = (
        "import sys\n"
        "from edge.errors import ImageError\nfrom edge.perception.imageio import load_image\n"
        "hwm = lambda: int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "before = hwm()\n"
        "try:\n    load_image(sys.argv[1])\nexcept ImageError as exc:\n    print(hwm() - before, exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    growth_kib, message = proc.stdout.split(" ", 1)
    assert "image too large (12000x12000" in message
    assert int(growth_kib) < 50 * 1024, f"peak RSS grew {int(growth_kib) / 1024:.1f} MiB"


def test_opencv_itself_is_bounded_once_edge_is_imported(tmp_path) -> None:
    """The second line: a decoder reached without the header check still refuses the bomb."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))
    script = (
        "import os, sys, edge, cv2, numpy as np\n"
        "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])\n"
        "try:\n    cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR)\nexcept cv2.error:\n    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    proc = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, cwd=REPO, timeout=120, env=env, check=True)
    assert proc.stdout.split() == [str(MAX_PIXELS), "refused"]


@pytest.mark.parametrize(("suffix", "params", "fmt"), ENCODINGS, ids=[f"{e[2]}{e[1]}" for e in ENCODINGS])
def test_every_cut_of_a_header_is_a_typed_error(suffix, params, fmt) -> None:
    data = encoded(suffix, params)
    for n in range(1, min(len(data), 400)):
        with pytest.raises(ImageError):
            decode_image(data[:n], f"cut{n}")


@pytest.mark.parametrize(("suffix", "params", "fmt"), ENCODINGS, ids=[f"{e[2]}{e[1]}" for e in ENCODINGS])
def test_damaged_headers_give_an_image_or_a_typed_error_never_another_exception(suffix, params, fmt) -> None:
    rng = np.random.default_rng(11)
    data = encoded(suffix, params)
    for _ in range(300):
        b = bytearray(data)
        for i in rng.integers(0, min(len(b), 64), 3):
            b[i] = int(rng.integers(0, 256))
        try:
            image = decode_image(bytes(b), "damaged")
        except ImageError:
            continue
        assert image.ndim == 3 and image.shape[0] * image.shape[1] <= MAX_PIXELS


def test_a_header_that_lies_about_the_data_is_refused() -> None:
    # The VP8X canvas says 100×100 around a 64×48 frame.
    with pytest.raises(ImageError, match="not a readable WebP"):
        decode_image(webp_vp8x(100, 100), "lying.webp")
    # A BMP declaring 8000×8000 px over 64×48 px of data: refused, nothing allocated for it.
    with pytest.raises(ImageError, match="not a readable BMP"):
        decode_image(resized(encoded(".bmp"), "BMP", 8000, 8000), "lying.bmp")
    # A .png file that is a JPEG is read by what it is, not by its name.
    assert read_header(encoded(".jpg"), "photo.png").format == "JPEG"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"GIF89a" + b"\x00" * 40, "not a supported image format"),
        (b"v/1\x01" + b"\x00" * 40, "not a supported image format"),  # OpenEXR
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40, "not a supported image format"),  # JPEG 2000
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIDAT" + b"\x00" * 20, "first chunk is not IHDR"),
        (b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 40, "scan before any frame header"),
        (b"BM" + b"\x00" * 12 + struct.pack("<I", 20) + b"\x00" * 20, "info header of 20 bytes"),
        (bomb_png(0, 10), "impossible size 0x10"),
        (bomb_png(70_000, 1), "impossible size 70000x1"),
    ],
)
def test_unknown_formats_and_malformed_headers_are_refused(payload, message) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(payload, "x")


def test_a_file_too_large_to_be_a_photo_is_refused_before_it_is_read(tmp_path) -> None:
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ImageError, match="file too large"):
        load_image(big)
    with pytest.raises(ImageError, match="file too large"):
        decode_image(b"\xff\xd8\xff" + b"\x00" * MAX_FILE_BYTES, "huge")


def _run_measured(cmd: list[str], out: Path) -> tuple[int, str, float]:
    """Exit status, stdout and peak RSS in MiB (the child's ru_maxrss, from wait4) of `cmd`."""
    with open(out, "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
        pid = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=stderr).pid
        _, status, usage = os.wait4(pid, 0)
    assert "Traceback" not in out.with_suffix(".err").read_text()
    return os.waitstatus_to_exitcode(status), out.read_text(), usage.ru_maxrss / 1024


def test_gallery_enroll_refuses_the_bomb_without_growing(tmp_path, model_store) -> None:
    """Acceptance, against a real `facegate gallery enroll`: its peak RSS with the 140 KB
    12000×12000 PNG stays within 50 MB of the same command given a small face-free photo."""
    runs = {}
    for name, data in (("small", encoded(".png")), ("bomb", bomb_png(12000, 12000))):
        photo = tmp_path / f"{name}.png"
        photo.write_bytes(data)
        cmd = [sys.executable, "-m", "edge.cli.main", "gallery", "enroll", "--data-dir", str(tmp_path / name), "--person", "Bomb Test", str(photo), "--json"]
        runs[name] = _run_measured(cmd, tmp_path / f"{name}.out")
    (code, out, peak), (_, _, baseline) = runs["bomb"], runs["small"]
    assert code != 0 and "image too large (12000x12000" in out
    print(f"facegate gallery enroll peak RSS: {baseline:.1f} MiB with a 64x48 photo, {peak:.1f} MiB with the 12000x12000 bomb")
    assert peak - baseline < 50, f"peak RSS grew {peak - baseline:.1f} MiB"


def test_hub_admin_person_add_from_dir_refuses_the_bomb_without_growing(tmp_path, model_store) -> None:
    """The same against the hub's `admin person add --from-dir`: the bomb's person gets no
    template and a reason, the other folder is enrolled, peak RSS as without the bomb."""
    biden = REPO / "assets/demo/gallery/Joe_Biden/biden.jpg"
    runs = {}
    for name, with_bomb in (("plain", False), ("bomb", True)):
        root = tmp_path / name / "photos"
        (root / "Joe_Biden").mkdir(parents=True)
        (root / "Joe_Biden" / "biden.jpg").write_bytes(biden.read_bytes())
        if with_bomb:
            (root / "Bomb_Test").mkdir()
            (root / "Bomb_Test" / "bomb.png").write_bytes(bomb_png(12000, 12000))
        config = tmp_path / name / "config.toml"
        config.write_text(f'[hub]\ndata_dir = "{tmp_path / name / "hub"}"\n')
        cmd = [sys.executable, "-m", "edge.cli.main", "--config", str(config), "admin", "person", "add", "--from-dir", str(root), "--json"]
        runs[name] = _run_measured(cmd, tmp_path / name / "out.txt")
    (_, out, peak), (_, _, baseline) = runs["bomb"], runs["plain"]
    report = {entry["person"]: entry for entry in json.loads(out)}
    assert report["Joe Biden"]["uid"] is not None
    assert report["Bomb Test"]["uid"] is None and "image too large (12000x12000" in report["Bomb Test"]["photos"][0]["reason"]
    print(f"admin person add peak RSS: {baseline:.1f} MiB without the bomb, {peak:.1f} MiB with it")
    assert peak - baseline < 50, f"peak RSS grew {peak - baseline:.1f} MiB"
