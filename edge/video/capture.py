"""Frame sources: video files, V4L2 devices, RTSP/HTTP streams and folders of images.

One reader thread per camera decodes frames (OpenCV releases the GIL while decoding, so this
overlaps with inference) and hands over only the newest one: a live camera never queues stale
frames behind a slow consumer — they are dropped and counted. A file played "as fast as
possible" is the exception: there the reader waits for the consumer, so no frame is skipped
and results do not depend on machine speed.

A source that cannot be opened or stops delivering is reopened with exponential backoff; the
time without frames is counted as a gap. Frames come out in RGB (what the perception stages
take), rotated and cropped to the camera's region of interest.
"""

from __future__ import annotations

import os

# FFmpeg and OpenCV print every failed connect and decode error to stderr; a camera that is
# down would flood the journal. The reader counts and reports those itself (SourceStats).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

from edge.config import CameraConfig
from edge.errors import ImageError
from edge.perception.imageheader import MAX_PIXELS
from edge.perception.imageio import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"}
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 10.0
# A file whose decoder fails this many times in a row has ended (truncated or at its end);
# fewer failures are a damaged stretch (measured: 7 reads for 20 kB of noise in an H.264 MP4).
FILE_READ_RETRIES = 25
# A file that exists but cannot be decoded this many times is given up on (it is not going to
# heal); a file that does not exist yet is waited for, since recordings appear and rotate.
FILE_OPEN_ATTEMPTS = 3
# Network and device reads block inside FFmpeg/V4L2; without a timeout a dead camera would
# hang the reader forever instead of triggering a reconnect.
STREAM_TIMEOUT_MS = 5000
_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    camera: str
    index: int  # position in the source: frames decoded before this one
    image: np.ndarray = field(repr=False)  # RGB, rotated and cropped to the ROI
    ts: float  # wall-clock capture time, unix seconds
    mono: float  # time.monotonic() at capture: latencies are measured from here
    t: float  # the source's clock in seconds: position in a file, else capture time (monotonic)


@dataclass(slots=True)
class SourceStats:
    frames: int = 0  # handed over (those later replaced by a newer one are in dropped_stale)
    decoded: int = 0
    dropped_stale: int = 0  # replaced by a newer frame before the consumer took them
    skipped_fps: int = 0  # dropped by the camera's fps cap
    corrupt: int = 0  # frames or images that failed to decode
    reconnects: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    last_error: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]
        out["gap_seconds"] = round(self.gap_seconds, 3)
        return out


def source_kind(source: str) -> str:
    """"device", "stream", "images" or "file" — decided from the text alone."""
    if source.isdigit() or source.startswith("/dev/video"):
        return "device"
    if "://" in source:
        return "stream"
    if Path(source).is_dir():
        return "images"
    return "file"


class _Images:
    """A folder of stills read in name order, with the same read() shape as cv2.VideoCapture."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.pos = 0
        self.corrupt = 0
        self.last_error = ""

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            try:
                return True, cv2.cvtColor(load_image(path), cv2.COLOR_RGB2BGR)
            except ImageError as exc:
                # One unreadable still must not end the run: skip it, count it, say why.
                self.corrupt += 1
                self.last_error = str(exc)
        return False, None

    def get(self, prop: int) -> float:
        return float(self.pos) if prop == cv2.CAP_PROP_POS_FRAMES else 0.0

    def release(self) -> None:
        pass


def _open(cam: CameraConfig, kind: str) -> cv2.VideoCapture | _Images | None:
    source = Path(cam.source)
    if kind == "images":
        return _Images(sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)) if source.is_dir() else None
    if kind == "file" and not source.is_file():
        return None
    if kind == "file" and source.suffix.lower() in IMAGE_SUFFIXES:
        # One still is read like a folder's, its size checked from the header: FFmpeg would
        # decode a 12000x12000 px PNG in full just to open it.
        return _Images([source])
    if kind == "device":
        index = int(cam.source) if cam.source.isdigit() else cam.source
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        cap = cv2.VideoCapture(cam.source, cv2.CAP_FFMPEG, params if kind == "stream" else [])
    if not cap.isOpened():
        cap.release()
        return None
    width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if kind != "device" and width * height > MAX_PIXELS:
        # Refused before the first frame is decoded (a crafted file or a camera sending absurd
        # frames); what FFmpeg allocated to open it is freed with it.
        cap.release()
        raise ImageError(f"{cam.source}: frames of {width:.0f}x{height:.0f} px, above {MAX_PIXELS // 1_000_000} Mpx: not decoded")
    if kind == "device":
        if cam.width and cam.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cam.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cam.height)
        # Only the newest frame matters; a deep driver queue is pure latency.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def prepare(bgr: np.ndarray, cam: CameraConfig) -> np.ndarray:
    """Rotate, crop to the ROI and convert to RGB (the ROI is in rotated-frame pixels)."""
    if cam.rotate:
        bgr = cv2.rotate(bgr, _ROTATIONS[cam.rotate])
    if cam.roi:
        x, y, w, h = cam.roi
        crop = bgr[y : y + h, x : x + w]
        if crop.size == 0:
            raise ImageError(f"camera {cam.name}: roi {list(cam.roi)} lies outside the {bgr.shape[1]}x{bgr.shape[0]} frame")
        bgr = crop
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CameraReader:
    """`reader.get(timeout)` returns the newest frame, or None; `reader.done` after a file's end."""

    def __init__(self, cam: CameraConfig, realtime: bool = False, file_fps: float = 0.0) -> None:
        self.cam = cam
        self.kind = source_kind(cam.source)
        # Files and folders are replayed; live sources pace themselves.
        self.replay = self.kind in ("file", "images")
        self.realtime = realtime or not self.replay
        self.file_fps = file_fps
        self.stats = SourceStats()
        self.fps = 0.0  # the source's frame rate once opened (0 = unknown)
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{cam.name}", daemon=True)

    def start(self) -> CameraReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=STREAM_TIMEOUT_MS / 1000 + 2)

    @property
    def done(self) -> bool:
        with self._cond:
            return self._eof and self._slot is None

    def get(self, timeout: float = 0.1) -> Frame | None:
        with self._cond:
            if self._slot is None and not self._eof:
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
            return frame

    # -- reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        gap_started: float | None = None
        opened_once = False
        undecodable = 0
        while not self._stop.is_set():
            try:
                cap, refused = _open(self.cam, self.kind), ""
            except ImageError as exc:  # frames too large: refused like an unreadable file
                cap, refused = None, str(exc)
            if cap is None and self.kind == "file" and Path(self.cam.source).is_file():
                undecodable += 1
                self.stats.last_error = refused or f"{self.cam.source}: not a readable video (truncated or corrupt?)"
                if undecodable >= FILE_OPEN_ATTEMPTS:
                    break
            elif cap is None:
                self.stats.last_error = refused or f"cannot open {self.cam.source}"
            if cap is None:
                gap_started = gap_started or time.monotonic()
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if opened_once:
                self.stats.reconnects += 1
            opened_once = True
            # A folder of stills has no rate of its own: `fps` says how often they were taken
            # (default one a second), which is what the tracker's clock needs.
            fps = cap.get(cv2.CAP_PROP_FPS) if isinstance(cap, cv2.VideoCapture) else (self.cam.fps or 1.0)
            self.fps = fps or self.file_fps or self.cam.fps
            delivered_any = self._pump(cap, fps or self.file_fps, gap_started)
            cap.release()
            if delivered_any:
                backoff, gap_started, undecodable = BACKOFF_START_S, None, 0
            elif self.replay:
                undecodable += 1
                why = cap.last_error if isinstance(cap, _Images) else ""
                self.stats.last_error = f"{self.cam.source}: no frame could be decoded" + (f" ({why})" if why else "")
                if undecodable >= FILE_OPEN_ATTEMPTS:
                    break
            if self._eof:
                break
            # The stream broke (or a file could not be decoded at all): count a gap, retry.
            gap_started = gap_started or time.monotonic()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _pump(self, cap: cv2.VideoCapture | _Images, fps: float, gap_started: float | None) -> bool:
        """Reads until the source fails or ends; True if any frame came through."""
        delivered_any = False
        failures = 0
        started = time.monotonic()
        last_kept_t = -1e9
        while not self._stop.is_set():
            ok, bgr = cap.read()
            if isinstance(cap, _Images):
                self.stats.corrupt = cap.corrupt
                self.stats.last_error = cap.last_error or self.stats.last_error
            if not ok or bgr is None:
                failures += 1
                if self.replay and failures < FILE_READ_RETRIES and delivered_any:
                    continue  # counted as corrupt only if a good frame follows (else: the end)
                if self.replay and delivered_any:
                    self._eof = True  # the end of the file (or of what survives of it)
                return delivered_any
            if failures and delivered_any:
                self.stats.corrupt += failures
            failures = 0
            now_mono, now_wall = time.monotonic(), time.time()
            if gap_started is not None and not delivered_any:
                self.stats.gaps += 1
                self.stats.gap_seconds += now_mono - gap_started
            self.stats.decoded += 1
            t = self._source_time(cap, fps, now_mono)
            if self.replay and self.realtime and fps > 0:
                # Play a file at its own speed: wait until this frame is due.
                delay = started + t - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return delivered_any
            if self.cam.fps and t - last_kept_t < 1.0 / self.cam.fps - 1e-6:
                self.stats.skipped_fps += 1
                continue
            last_kept_t = t
            try:
                image = prepare(bgr, self.cam)
            except ImageError as exc:
                self.stats.last_error = str(exc)
                self.stats.corrupt += 1
                continue
            self._deliver(Frame(self.cam.name, self.stats.decoded - 1, image, now_wall, time.monotonic() if self.replay and self.realtime else now_mono, t))
            delivered_any = True
        return delivered_any

    def _source_time(self, cap: cv2.VideoCapture | _Images, fps: float, now_mono: float) -> float:
        if not self.replay:
            return now_mono
        if fps > 0:
            # Frame count / fps, not CAP_PROP_POS_MSEC: some containers (webm, GIF) report 0.
            return self.stats.decoded / fps - 1.0 / fps
        return float(self.stats.decoded - 1)

    def _deliver(self, frame: Frame) -> None:
        with self._cond:
            if not self.realtime:
                # As fast as possible: wait for the consumer instead of dropping.
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._slot is not None:
                self.stats.dropped_stale += 1
            self._slot = frame
            self.stats.frames += 1
            self._cond.notify_all()
