from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ImageError
from edge.perception.imageio import decode_image, load_image

REPO = Path(__file__).resolve().parents[2]


def _jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "face.jpg"
    src = REPO / "assets/demo/gallery/Barack_Obama/obama.jpg"
    path.write_bytes(src.read_bytes())
    return path


def test_truncated_jpeg_is_refused(tmp_path) -> None:
    path = _jpeg(tmp_path)
    data = path.read_bytes()
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(data[: len(data) // 2], "half.jpg")


def test_truncated_png_is_refused(tmp_path) -> None:
    ok, png = cv2.imencode(".png", np.full((40, 40, 3), 90, np.uint8))
    assert ok
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(png.tobytes()[:-20], "cut.png")


@pytest.mark.parametrize(
    "payload, message",
    [(b"", "empty file"), (b"hello, I am text", "not a supported image format"), (b"\xff\xd8\xff" + b"\x00" * 50, "truncated JPEG")],
)
def test_garbage_is_a_typed_error(payload, message) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(payload, "x")


def test_missing_file_and_directory_are_typed_errors(tmp_path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_greyscale_pgm_becomes_rgb(shared_data) -> None:
    image = load_image(shared_data / "orl/s1/1.pgm")
    assert image.shape == (112, 92, 3) and image.dtype == np.uint8


def test_embed_cli_reports_bad_files_without_a_traceback(tmp_path, model_store) -> None:
    good = _jpeg(tmp_path)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:5000])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((200, 200, 3), np.uint8))
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "embed", str(good), str(cut), str(text), str(blank), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1  # some inputs failed
    results = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert len(results["face.jpg"]["faces"]) == 1
    face = results["face.jpg"]["faces"][0]
    assert {"box", "keypoints", "score", "quality", "embedding"} <= set(face)
    assert len(face["embedding"]) == 512
    assert "truncated JPEG" in results["cut.jpg"]["error"]
    assert "not a supported image format" in results["notes.jpg"]["error"]
    assert results["blank.png"]["faces"] == [] and "error" not in results["blank.png"]
