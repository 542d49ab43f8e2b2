"""Frame sources on real video: every frame in order, stale frames dropped live, faults survived."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import CameraConfig
from edge.video.capture import CameraReader, prepare, source_kind
from tests.support.mjpeg_server import MjpegServer, free_port, load_jpegs

CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
CLIP_FRAMES = 275


def drain(reader: CameraReader, limit_s: float = 60.0, slow_s: float = 0.0) -> list:
    frames, started = [], time.monotonic()
    while not reader.done and time.monotonic() - started < limit_s:
        frame = reader.get(0.2)
        if frame is not None:
            frames.append(frame)
            time.sleep(slow_s)
    reader.stop()
    return frames


def test_file_as_fast_as_possible_delivers_every_frame_in_order() -> None:
    reader = CameraReader(CameraConfig(source=str(CLIP))).start()
    frames = drain(reader)
    assert len(frames) == CLIP_FRAMES
    assert [f.index for f in frames] == list(range(CLIP_FRAMES))
    assert reader.stats.dropped_stale == 0 and reader.stats.corrupt == 0
    # The source clock is the position in the file: 29.97 fps.
    assert frames[-1].t == pytest.approx((CLIP_FRAMES - 1) / 29.97, abs=0.01)
    assert frames[0].image.shape == (360, 640, 3)
    # RGB out: the clip's stage curtain is orange-brown, so red dominates blue.
    mean = frames[150].image.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[2]


def test_realtime_with_a_slow_consumer_drops_stale_frames_and_keeps_the_newest() -> None:
    reader = CameraReader(CameraConfig(source=str(CLIP)), realtime=True).start()
    started = time.monotonic()
    frames = drain(reader, slow_s=0.1)  # a consumer at 10 fps behind a 30 fps source
    elapsed = time.monotonic() - started
    assert elapsed > 8.0  # played at its own speed (9.2 s), not as fast as possible
    stats = reader.stats
    assert stats.dropped_stale > 150
    assert len(frames) + stats.dropped_stale == stats.frames == CLIP_FRAMES
    assert all(b.index > a.index for a, b in itertools.pairwise(frames))
    # The newest frame is what stays for the consumer: the clip's last frame is never dropped.
    assert frames[-1].index == CLIP_FRAMES - 1


def test_fps_cap_roi_and_rotation() -> None:
    cam = CameraConfig(source=str(CLIP), fps=10.0, roi=(100, 50, 200, 300), rotate=90)
    frames = drain(CameraReader(cam).start())
    # 29.97 fps capped to 10: every third frame.
    assert 88 <= len(frames) <= 95
    assert frames[0].image.shape == (300, 200, 3)  # rotated 640x360 → 360x640, then the ROI
    bgr = np.zeros((360, 640, 3), np.uint8)
    bgr[0, 0] = (255, 0, 0)  # blue top-left pixel
    out = prepare(bgr, CameraConfig(source="x", rotate=180))
    assert tuple(out[-1, -1]) == (0, 0, 255)  # now bottom-right, and RGB


def test_image_folder_skips_a_corrupt_image_and_counts_it(tmp_path: Path) -> None:
    cap = cv2.VideoCapture(str(CLIP))
    for i in range(6):
        _, frame = cap.read()
        cv2.imwrite(str(tmp_path / f"{i:03d}.jpg"), frame)
    (tmp_path / "003.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (tmp_path / "notes.txt").write_text("ignored")
    assert source_kind(str(tmp_path)) == "images"
    reader = CameraReader(CameraConfig(source=str(tmp_path))).start()
    frames = drain(reader)
    assert len(frames) == 5
    assert reader.stats.corrupt == 1 and "003.jpg" in reader.stats.last_error


def test_truncated_and_corrupted_files_end_or_continue_without_crashing(tmp_path: Path) -> None:
    data = CLIP.read_bytes()
    # This MP4 keeps its index (moov) at the end, as a camera cut off mid-recording would
    # lack it: undecodable, so the reader gives up after a few tries and says why.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    reader = CameraReader(CameraConfig(source=str(cut))).start()
    assert drain(reader, limit_s=20) == [] and reader.done
    assert "not a readable video" in reader.stats.last_error

    # An MJPEG AVI cut short plays up to the cut, then ends.
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 360))
    for frame in drain(CameraReader(CameraConfig(source=str(CLIP), fps=10.0)).start()):
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()
    short = tmp_path / "short.avi"
    short.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    frames = drain(CameraReader(CameraConfig(source=str(short))).start())
    assert 30 < len(frames) < 62

    # 20 kB of noise in the middle of the MP4's media data: the frames after it still come.
    damaged = bytearray(data)
    middle = len(data) // 2
    damaged[middle : middle + 20000] = np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(damaged))
    frames = drain(CameraReader(CameraConfig(source=str(corrupt))).start())
    assert frames and frames[-1].index > CLIP_FRAMES * 0.8


def test_missing_file_is_retried_until_it_appears(tmp_path: Path) -> None:
    target = tmp_path / "late.mp4"
    reader = CameraReader(CameraConfig(source=str(target))).start()
    time.sleep(1.0)
    assert reader.get(0.1) is None and "cannot open" in reader.stats.last_error
    shutil.copy(CLIP, target)
    frames = drain(reader)
    assert len(frames) == CLIP_FRAMES
    assert reader.stats.gaps == 1 and reader.stats.gap_seconds >= 0.9


def test_http_camera_stopped_and_restarted_reconnects_and_counts_the_gap() -> None:
    port = free_port()
    jpegs = load_jpegs(CLIP, 60)
    server = MjpegServer(jpegs, port).start()
    reader = CameraReader(CameraConfig(source=server.url)).start()
    assert source_kind(server.url) == "stream" and reader.realtime
    got = []

    def consume(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = reader.get(0.2)
            if frame is not None:
                got.append(frame)

    consume(2.0)
    before = len(got)
    assert before > 20
    server.stop()
    consume(1.5)
    assert len(got) - before <= 2  # nothing new while the camera is down
    server = MjpegServer(jpegs, port).start()
    consume(5.0)
    server.stop()
    reader.stop()
    assert len(got) > before + 20  # frames flow again
    assert reader.stats.reconnects >= 1 and reader.stats.gaps >= 1
    assert reader.stats.gap_seconds >= 1.0
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("capture-"))
