"""The local ZeroMQ API: decision and door events on a PUB socket, control on a ROUTER socket.

Schema (docs/door.md has the full field list):
- events: two-part messages `[topic, json]`, topic one of `TOPICS`; the JSON object carries
  `"v": 1` and `"type"` = the topic. Subscribe to b"decision", b"door", b"challenge" or b"" for all.
- control: one JSON object per request, `{"v": 1, "op": <op>, ...}`; the reply is
  `{"v": 1, "ok": true, ...}` or `{"v": 1, "ok": false, "error": {"code", "message"}}` with a
  code from `ERROR_CODES`. Every request that arrives is answered, even one that is not JSON or
  has several frames; one over `[zmq] max_message_bytes` is dropped by libzmq unread.

The control socket is a ROUTER, so clients keep using REQ (the envelope is kept and returned)
and no request waits behind another: fast ops (`status`, `reload`) are answered on the socket's
thread at once, slow ones (`identify` waits for a decision, `enroll` for the inference loop) run
on a few worker threads whose replies the socket thread sends. ZeroMQ sockets are not
thread-safe, so only the socket thread touches it; workers hand replies back through a queue
and wake it through a pipe. Server sockets are made in edge/outputs/zmq_auth.py (CURVE, size
bound, ipc file mode). Every parsed request gets `CLIENT_KEY`: the Z85 public key the client
proved in the CURVE handshake (the ZAP handler's User-Id of the message), or None without CURVE;
whatever a client wrote under that name is overwritten, so a handler may trust it (`withdraw`
binds its tokens to it).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Collection
from typing import Any

import zmq

from edge.config import ZmqConfig
from edge.errors import ApiError
from edge.outputs.zmq_auth import server_socket

log = logging.getLogger(__name__)

VERSION = 1
TOPICS = ("decision", "door", "challenge")
OPS = ("identify", "enroll", "withdraw", "status", "reload")
CLIENT_KEY = "_client_key"  # set by the server from the CURVE handshake, never taken from the request
ERROR_CODES = (
    "bad_request",  # not JSON, not an object, wrong "v", several frames, a missing or mistyped field
    "unknown_op",
    "unknown_camera",
    "unknown_request",  # the request_id never existed or its face expired
    "consent_required",  # enroll without "consent": true
    "invalid_profile",  # name or profile fields the gallery refuses
    "group_not_allowed",  # enroll into a group outside [zmq] enroll_groups
    "validity_too_long",  # enroll valid_until beyond [zmq] enroll_max_valid_days
    "rate_limited",  # reload again within [zmq] reload_min_interval_s
    "not_allowed",  # withdraw from a client not in [zmq] withdraw_clients (or without CURVE)
    "not_identified",  # withdraw: no live face recognised at the 1:1 threshold in front
    "unknown_token",  # withdraw confirmation: never issued, used, expired, or another client's
    "face_changed",  # withdraw confirmation: the face in front is not the one the token names
    "busy",  # the inference loop did not take the job in time, or too many slow requests wait
    "internal",
)
POLL_MS = 100
WORKERS = 4  # slow requests answered at the same time
MAX_WAITING = 32  # slow requests queued beyond the workers; more are answered `busy` at once
RCVHWM = 16  # requests libzmq queues per client: with max_message_bytes, what one peer can make us hold

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class EventPublisher:
    def __init__(self, ctx: zmq.Context[Any], zcfg: ZmqConfig) -> None:
        self.sock = server_socket(ctx, zmq.PUB, zcfg.events, zcfg)
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


def parse(frames: list[bytes]) -> dict[str, Any]:
    """The request in a message's frames (the envelope already taken off); ApiError if it is not one."""
    if len(frames) != 1:
        raise ApiError("bad_request", f"a request is one frame holding a JSON object (got {len(frames)} frames)")
    try:
        request = json.loads(frames[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("bad_request", f"not JSON ({exc})") from exc
    except RecursionError as exc:
        raise ApiError("bad_request", "not JSON (nested too deep)") from exc
    if not isinstance(request, dict):
        raise ApiError("bad_request", "a request is a JSON object")
    if request.get("v", VERSION) != VERSION:
        raise ApiError("bad_request", f"v: this daemon speaks version {VERSION}")
    field_of(request, "op", str)
    return request


def error_reply(exc: ApiError) -> dict[str, Any]:
    return {"v": VERSION, "ok": False, "error": {"code": exc.code, "message": str(exc)}}


def run(handlers: dict[str, Handler], request: dict[str, Any]) -> dict[str, Any]:
    """One parsed request in, one reply out; never raises."""
    try:
        op = request["op"]
        if op not in handlers:
            raise ApiError("unknown_op", f"op {op!r}: one of {', '.join(handlers)}")
        return {"v": VERSION, "ok": True, **handlers[op](request)}
    except ApiError as exc:
        return error_reply(exc)
    except Exception as exc:  # a handler bug must not leave a request without a reply
        log.exception("control request failed")
        return {"v": VERSION, "ok": False, "error": {"code": "internal", "message": type(exc).__name__}}


def encode(reply: dict[str, Any]) -> bytes:
    try:
        return json.dumps(reply, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        log.exception("control reply not serialisable")
        return json.dumps({"v": VERSION, "ok": False, "error": {"code": "internal", "message": "reply not serialisable"}}).encode()


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing envelope, body) of what a ROUTER received: the peer id and every frame up to the
    first empty delimiter ([id, b"", body] from REQ, [id, request id, b"", body] from a REQ with
    ZMQ_REQ_CORRELATE), or the id alone from a DEALER that sends no delimiter. The reply goes back
    under the same envelope, which is what REQ checks."""
    for i, frame in enumerate(frames[1:], start=1):
        if frame == b"":
            return frames[: i + 1], frames[i + 1 :]
    return frames[:1], frames[1:]


def client_key(frame: zmq.Frame) -> str | None:
    """The Z85 CURVE key the peer of `frame` authenticated with (ZAP User-Id); None without CURVE."""
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, UnicodeDecodeError):
        return None
    return user if isinstance(user, str) and len(user) == 40 else None


class ControlServer:
    """The ROUTER socket on its own thread; each op is a small named handler; `slow` ops run on workers."""

    def __init__(self, ctx: zmq.Context[Any], zcfg: ZmqConfig, handlers: dict[str, Handler], slow: Collection[str] = ()) -> None:
        self.sock = server_socket(ctx, zmq.ROUTER, zcfg.control, zcfg)
        self.sock.setsockopt(zmq.RCVHWM, RCVHWM)
        self.handlers, self.slow = handlers, frozenset(slow)
        self.stop = threading.Event()
        self.jobs: queue.Queue[tuple[list[bytes], dict[str, Any]]] = queue.Queue(MAX_WAITING)
        self.replies: queue.SimpleQueue[tuple[list[bytes], dict[str, Any]]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Workers write to the pipe under this lock and only while it is open: a worker that
        # finishes after the stop must not write into whatever file reuses the descriptor.
        self._wake_lock, self._wake_open = threading.Lock(), True
        self.errors = 0  # loop iterations that raised (logged; the loop goes on)
        self.thread = threading.Thread(target=self._serve, name="zmq-control", daemon=True)
        # Daemon threads: a worker waiting in `identify` must not hold up the process's exit.
        self.workers = [threading.Thread(target=self._work, name=f"zmq-control-worker-{i}", daemon=True) for i in range(WORKERS)]

    def start(self) -> ControlServer:
        self.thread.start()
        for worker in self.workers:
            worker.start()
        return self

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                try:
                    ready = dict(poller.poll(POLL_MS))
                    if self._wake_r in ready:
                        self._drain_wake()
                    self._send_replies()
                    if self.sock in ready:
                        self._take(self.sock.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    continue
                except Exception:  # noqa: BLE001 - whatever one request did, the socket keeps serving
                    self.errors += 1
                    log.exception("zmq control loop: one message failed; still serving")
        finally:
            self.sock.close()
            with self._wake_lock:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _take(self, message: list[zmq.Frame]) -> None:
        envelope, body = split_envelope([frame.bytes for frame in message])
        try:
            request = parse(body)
        except ApiError as exc:
            self._send(envelope, error_reply(exc))
            return
        request[CLIENT_KEY] = client_key(message[-1])
        if request["op"] not in self.slow:
            self._send(envelope, run(self.handlers, request))
            return
        try:
            self.jobs.put_nowait((envelope, request))
        except queue.Full:
            self._send(envelope, error_reply(ApiError("busy", f"{MAX_WAITING} slow requests already wait; retry")))

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                envelope, request = self.jobs.get(timeout=POLL_MS / 1000)
            except queue.Empty:
                continue
            self.replies.put((envelope, run(self.handlers, request)))
            with self._wake_lock:
                if self._wake_open:
                    try:
                        os.write(self._wake_w, b"\0")
                    except BlockingIOError:
                        pass  # a full pipe wakes the socket thread already

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _send_replies(self) -> None:
        while True:
            try:
                envelope, reply = self.replies.get_nowait()
            except queue.Empty:
                return
            self._send(envelope, reply)

    def _send(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        # A ROUTER drops a reply to a client that went away: nothing to handle here.
        self.sock.send_multipart([*envelope, encode(reply)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2.0)
