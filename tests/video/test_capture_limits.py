"""Camera sources bounded before decoding (issue 19): a single still as the source is read with
its header checked (never through FFmpeg, which decodes a PNG bomb in full to open it), and a
video whose frames are absurdly large is refused before its first frame is decoded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge.config import CameraConfig
from edge.video.capture import CameraReader
from tests.perception.test_imageheader import bomb_png

REPO = Path(__file__).resolve().parents[2]


def _frames(source: Path) -> tuple[list, CameraReader]:
    reader = CameraReader(CameraConfig(source=str(source))).start()
    frames, started = [], time.monotonic()
    while not reader.done and time.monotonic() - started < 60:
        frame = reader.get(0.2)
        if frame is not None:
            frames.append(frame)
    reader.stop()
    return frames, reader


def _y4m(path: Path, width: int, height: int) -> Path:
    """A raw video whose header declares width×height, with a sliver of its first frame."""
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + bytes(100_000))
    return path


def test_a_single_still_is_a_source_of_one_frame(tmp_path: Path) -> None:
    still = tmp_path / "door.jpg"
    cv2.imwrite(str(still), np.full((120, 160, 3), 90, np.uint8))
    frames, reader = _frames(still)
    assert len(frames) == 1 and frames[0].image.shape == (120, 160, 3) and reader.stats.corrupt == 0


def test_a_still_or_a_video_declaring_giant_frames_is_refused_and_the_reader_ends(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))
    frames, reader = _frames(bomb)
    assert frames == [] and reader.stats.corrupt >= 1
    assert "image too large (12000x12000" in reader.stats.last_error
    frames, reader = _frames(_y4m(tmp_path / "big.y4m", 12000, 12000))
    assert frames == [] and "frames of 12000x12000 px, above 80 Mpx: not decoded" in reader.stats.last_error


def test_refusing_them_costs_no_memory(tmp_path: Path) -> None:
    """Peak RSS (VmHWM) of a fresh process around a reader on each source (before, the still
    went through FFmpeg: +1382 MiB measured on this machine)."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(12000, 12000))
    script = (
        "import sys, time\n"
        "from edge.config import CameraConfig\nfrom edge.video.capture import CameraReader\n"
        "hwm = lambda: int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "before = hwm()\n"
        "reader = CameraReader(CameraConfig(source=sys.argv[1])).start()\n"
        "while not reader.done:\n    reader.get(0.2)\n"
        "reader.stop()\nprint(hwm() - before)\n"
    )
    for source in (bomb, _y4m(tmp_path / "big.y4m", 12000, 12000)):
        proc = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
        assert int(proc.stdout.split()[-1]) < 50 * 1024, f"{source.name}: peak RSS grew {int(proc.stdout.split()[-1]) / 1024:.0f} MiB"
