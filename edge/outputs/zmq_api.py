"""The local ZeroMQ API: decision and door events on a PUB socket, control on a REP socket.

Schema (docs/door.md has the full field list):
- events: two-part messages `[topic, json]`, topic one of `TOPICS`; the JSON object carries
  `"v": 1` and `"type"` = the topic. Subscribe to b"decision", b"door" or b"" for all.
- control: one JSON object per request, `{"v": 1, "op": <op>, ...}`; the reply is
  `{"v": 1, "ok": true, ...}` or `{"v": 1, "ok": false, "error": {"code", "message"}}` with a
  code from `ERROR_CODES`. A REP socket answers every request, even one that is not JSON.

The PUB socket belongs to the outputs thread and the REP socket to its own thread; ZeroMQ
sockets are not thread-safe, so neither is touched from anywhere else.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from edge.errors import ApiError, OutputError

log = logging.getLogger(__name__)

VERSION = 1
TOPICS = ("decision", "door")
OPS = ("identify", "enroll", "status", "reload")
ERROR_CODES = (
    "bad_request",  # not JSON, not an object, wrong "v", a missing or mistyped field
    "unknown_op",
    "unknown_camera",
    "unknown_request",  # the request_id never existed or its face expired
    "consent_required",  # enroll without "consent": true
    "invalid_profile",  # name or profile fields the gallery refuses
    "busy",  # the inference loop did not take the job in time
    "internal",
)
POLL_MS = 100

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def bind(ctx: zmq.Context[Any], kind: int, endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise OutputError(f"zmq: cannot bind {endpoint} ({exc})") from exc
    return sock


class EventPublisher:
    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = bind(ctx, zmq.PUB, endpoint)
        # A slow subscriber must not grow our memory without bound: drop beyond this queue.
        self.sock.setsockopt(zmq.SNDHWM, 1000)

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        payload = json.dumps({"v": VERSION, "type": topic, **body}, separators=(",", ":")).encode()
        self.sock.send_multipart([topic.encode(), payload])

    def close(self) -> None:
        self.sock.close()


def field_of(request: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """A request field of the right type, or a `bad_request` naming it."""
    if name not in request:
        if default is ...:
            raise ApiError("bad_request", f"{name}: required")
        return default
    value = request[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        raise ApiError("bad_request", f"{name}: wrong type ({type(value).__name__})")
    return value


def answer(handlers: dict[str, Handler], raw: bytes) -> dict[str, Any]:
    """One request in, one reply out; never raises."""
    try:
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError("bad_request", f"not JSON ({exc})") from exc
        if not isinstance(request, dict):
            raise ApiError("bad_request", "a request is a JSON object")
        if request.get("v", VERSION) != VERSION:
            raise ApiError("bad_request", f"v: this daemon speaks version {VERSION}")
        op = field_of(request, "op", str)
        if op not in handlers:
            raise ApiError("unknown_op", f"op {op!r}: one of {', '.join(handlers)}")
        return {"v": VERSION, "ok": True, **handlers[op](request)}
    except ApiError as exc:
        return {"v": VERSION, "ok": False, "error": {"code": exc.code, "message": str(exc)}}
    except Exception as exc:  # a handler bug must not leave the REP socket without a reply
        log.exception("control request failed")
        return {"v": VERSION, "ok": False, "error": {"code": "internal", "message": type(exc).__name__}}


class ControlServer:
    """The REP socket on its own thread; each op is a small named handler."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, handlers: dict[str, Handler]) -> None:
        self.sock = bind(ctx, zmq.REP, endpoint)
        self.handlers = handlers
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="zmq-control", daemon=True)

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def _serve(self) -> None:
        try:
            while not self.stop.is_set():
                if self.sock.poll(POLL_MS):
                    reply = answer(self.handlers, self.sock.recv())
                    self.sock.send(json.dumps(reply, separators=(",", ":")).encode())
        finally:
            self.sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2.0)
