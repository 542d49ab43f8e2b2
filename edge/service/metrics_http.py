"""The HTTP side of metrics: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

A standard-library server on a thread of its own; prometheus-client's `start_http_server` is
not used because it serves only metrics and cannot be stopped cleanly (tests start several).

- `/healthz` — the process is alive and its frame loop turns: 503 once the loop has been still
  for `[metrics] stall_s` (the same failure systemd's watchdog acts on, for supervisors that
  only probe HTTP, such as Kubernetes or a load balancer).
- `/readyz` — models and gallery are loaded and the loop runs: 503 while starting, stalled or
  stopping.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, exposition


class Health:
    """Loop liveness as the HTTP thread sees it; written by the inference thread (plain float and
    bool stores, which are atomic in CPython, so the frame path takes no lock)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._born = time.monotonic()
        self._last_tick: float | None = None
        self._running = False
        self._stopped = False

    def started(self) -> None:
        self._last_tick = time.monotonic()
        self._running = True

    def tick(self) -> None:
        self._last_tick = time.monotonic()

    def stopped(self) -> None:
        self._running, self._stopped = False, True

    def tick_age(self) -> float | None:
        last = self._last_tick
        return None if last is None else time.monotonic() - last

    def live(self) -> tuple[bool, dict[str, object]]:
        age = self.tick_age()
        # Before the loop starts the process is loading models: alive, not yet ready.
        ok = age is None or self._stopped or age < self.stall_s
        return ok, {"status": "ok" if ok else "stalled", "loop_tick_age_s": None if age is None else round(age, 3), "stall_s": self.stall_s}

    def ready(self) -> tuple[bool, dict[str, object]]:
        age = self.tick_age()
        ok = self._running and age is not None and age < self.stall_s
        if self._stopped:
            status = "stopping"
        elif not self._running:
            status = "starting"
        else:
            status = "ready" if ok else "stalled"
        return ok, {"status": status, "loop_tick_age_s": None if age is None else round(age, 3)}


class MetricsServer:
    def __init__(self, address: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        handler = _handler(registry, health)
        server_class = _V6Server if ":" in address else ThreadingHTTPServer
        self.httpd = server_class((address, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="facegate-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5.0)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "facegate"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = exposition.choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encoder(registry), content_type)
            elif path in ("/healthz", "/readyz"):
                ok, body = (health.live if path == "/healthz" else health.ready)()
                self._reply(200 if ok else 503, (json.dumps(body) + "\n").encode(), "application/json")
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
