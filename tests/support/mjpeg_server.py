"""A local MJPEG-over-HTTP camera for fault tests: what many IP cameras serve at /video.mjpg.

Serves the frames of a video file as `multipart/x-mixed-replace` at the file's frame rate, in
a loop, on a loopback port. Stop it and start a new one on the same port to simulate a camera
that drops off the network and comes back.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

BOUNDARY = b"facegateframe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_jpegs(video: Path, limit: int = 120) -> list[bytes]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    cap.release()
    return frames


class MjpegServer:
    def __init__(self, jpegs: list[bytes], port: int, fps: float = 30.0) -> None:
        self.jpegs, self.port, self.fps = jpegs, port, fps
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                i = 0
                try:
                    while not server.stopping.is_set():
                        jpeg = server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        i += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> MjpegServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
