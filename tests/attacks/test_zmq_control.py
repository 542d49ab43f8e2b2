"""Issue 19, the local ZeroMQ API written as an attacker would try it, against a real `facegate run`.

The control socket used to answer anyone who reached it and bind anywhere: `identify` gave names,
`enroll` made staff valid for decades, `reload` ran at will; a 64 MiB message was read into
memory, a two-frame message killed the control thread and `status` waited behind `identify`.
Now (edge/outputs/zmq_auth.py, zmq_api.py, kiosk.py): CURVE with an allow-list on both sockets,
a size bound libzmq enforces before reading, every malformed request answered, slow ops off the
socket thread, `reload` rate-limited, kiosk enrollments bounded by [zmq] enroll_groups and
enroll_max_valid_days; and without CURVE, no endpoint other hosts can reach.

One daemon serves every test of the module (a live MJPEG camera of empty frames, so `identify`
waits its full `wait_ms`); figures are printed, not asserted on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from edge.outputs.zmq_auth import allow_client, write_keypair
from tests.support.mjpeg_server import MjpegServer, free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
NO_REPLY_S = 2.0  # how long a refused client waits for an answer that must not come


def facegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=300, check=False)


@dataclass(frozen=True)
class Served:
    proc: subprocess.Popen[str]
    control: str
    events: str
    server_key: Path  # the daemon's public key file
    client: Path  # an allowed client's secret key file
    stranger: Path  # a well-formed key pair nobody allowed
    config: Path


def _config(root: Path, control: str, events: str, secret: Path | None, allowed: Path | None) -> Path:
    curve = f'curve_secret_key_file = "{secret}"\nallowed_clients_dir = "{allowed}"\n' if secret else ""
    path = root / "config.toml"
    path.write_text(
        "[liveness]\nenabled = false\n[metrics]\nenabled = false\n"
        f'[zmq]\ncontrol = "{control}"\nevents = "{events}"\n{curve}'
        'enroll_groups = ["visitors"]\nenroll_max_valid_days = 30\nreload_min_interval_s = 3600.0\n'
    )
    return path


@pytest.fixture(scope="module")
def served(model_store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("zmq")
    server_pub, server_secret, _ = write_keypair(root / "server")
    _, client_secret, _ = write_keypair(root / "kiosk1")
    _, stranger_secret, _ = write_keypair(root / "stranger")
    allow_client(root / "allowed", client_secret)
    control, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    config = _config(root, control, events, server_secret, root / "allowed")
    assert facegate("keys", "init", "--data-dir", str(root / "data")).returncode == 0
    # Small empty frames at a low rate: a live camera with nobody in view, cheap to run.
    black = cv2.imencode(".jpg", np.zeros((240, 320, 3), np.uint8))[1].tobytes()
    camera = MjpegServer([black], free_port(), fps=5.0).start()
    stderr = (root / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(root / "data"),
                             "--source", camera.url], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    here = Served(proc, control, events, server_pub, client_secret, stranger_secret, config)
    try:
        with Client(here, here.client) as probe:
            assert wait_for(lambda: proc.poll() is not None or probe.ask({"op": "status"}, 1.0) is not None, 120), (root / "stderr.txt").read_text()
            assert proc.poll() is None, (root / "stderr.txt").read_text()
            # Past the first frames (model arenas, decoder buffers), so memory figures measure the test.
            assert wait_for(lambda: probe.ask({"op": "status"})["cameras"].get("cam0", {}).get("frames", 0) >= 20, 120)
        yield here
    finally:
        proc.terminate()
        proc.wait(60)
        camera.stop()
        stderr.close()


class Client:
    """A kiosk with pyzmq only; `secret` None = no CURVE at all."""

    def __init__(self, served: Served, secret: Path | None, kind: int = zmq.REQ, endpoint: str | None = None, watch: int = 0) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.REQ:
            # A REQ that got no reply may ask again (the daemon's startup, the refused clients).
            self.sock.setsockopt(zmq.REQ_RELAXED, 1)
            self.sock.setsockopt(zmq.REQ_CORRELATE, 1)
        if secret is not None:
            public, secret_key = zmq.auth.load_certificate(secret)
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret_key
            self.sock.curve_serverkey = zmq.auth.load_certificate(served.server_key)[0]
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | watch)
        self.sock.connect(endpoint or served.control)

    def handshake(self, timeout_s: float = NO_REPLY_S) -> int | None:
        """The next handshake outcome (a zmq.EVENT_HANDSHAKE_* value) or `watch`ed event, or None."""
        if not self.monitor.poll(int(timeout_s * 1000)):
            return None
        return int(recv_monitor_message(self.monitor)["event"])

    def send(self, request: dict) -> None:
        self.sock.send(json.dumps({"v": 1, **request}).encode())

    def reply(self, timeout_s: float) -> dict | None:
        return json.loads(self.sock.recv()) if self.sock.poll(int(timeout_s * 1000)) else None

    def ask(self, request: dict, timeout_s: float = 20.0) -> dict | None:
        # A REQ whose connection was dropped has no peer to send to until it reconnects.
        if not self.sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
            return None
        try:
            self.sock.send(json.dumps({"v": 1, **request}).encode(), zmq.NOBLOCK)
        except zmq.Again:
            return None  # the connection went away between the poll and the send
        return self.reply(timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.disable_monitor()
        self.monitor.close()
        self.sock.close()
        self.ctx.term()


def vm(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}


def test_clients_without_an_allowed_key_get_nothing_from_either_socket(served: Served) -> None:
    for endpoint in (served.control, served.events):
        kind = zmq.REQ if endpoint == served.control else zmq.SUB
        for secret in (None, served.stranger):
            with Client(served, secret, kind, endpoint) as someone:
                # The handshake never succeeds: no CURVE is a protocol mismatch, a stranger's key is refused by ZAP.
                assert someone.handshake() in (None, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                                               zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL), (endpoint, secret)
                if kind == zmq.REQ:
                    assert someone.ask({"op": "identify", "camera": "cam0"}, NO_REPLY_S) is None
        with Client(served, served.client, kind, endpoint) as kiosk:
            assert kiosk.handshake(20.0) == zmq.EVENT_HANDSHAKE_SUCCEEDED, endpoint
    with Client(served, served.client) as kiosk:
        status = kiosk.ask({"op": "status"})
        assert status is not None and status["ok"] and "cam0" in status["cameras"]


def test_a_64_mib_message_is_dropped_unread_and_the_socket_serves_on(served: Served) -> None:
    before = vm(served.proc.pid)
    with Client(served, served.client, watch=zmq.EVENT_DISCONNECTED) as kiosk:
        assert kiosk.handshake(20.0) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        kiosk.sock.send(b"{" + b" " * (64 * 1024 * 1024) + b"}")
        # The daemon's libzmq read the message's size, over [zmq] max_message_bytes, and hung up.
        assert kiosk.handshake(20.0) == zmq.EVENT_DISCONNECTED
        assert kiosk.reply(NO_REPLY_S) is None
    with Client(served, served.client) as kiosk:
        assert kiosk.ask({"op": "status"})["ok"]
    after = vm(served.proc.pid)
    growth_kib = after["VmHWM"] - before["VmHWM"]
    print(json.dumps({"zmq_64mib_message_vmhwm_growth_kib": growth_kib, "vmrss_growth_kib": after["VmRSS"] - before["VmRSS"]}))
    assert growth_kib < 10 * 1024


def test_multipart_and_junk_are_answered_bad_request_and_never_end_the_socket(served: Served) -> None:
    with Client(served, served.client) as kiosk:
        kiosk.sock.send_multipart([b'{"v": 1, "op": "status"}', b"second frame"])
        assert kiosk.reply(20.0)["error"]["code"] == "bad_request"
        for junk in (b"\xff\xfe\x00", b"[1, 2]", b'{"v": 2, "op": "status"}', b'{"op": 7}', b"[" * 100000, b""):
            kiosk.sock.send(junk)
            answer = kiosk.reply(20.0)
            assert answer is not None and answer["error"]["code"] == "bad_request", (junk[:20], answer)
        assert kiosk.ask({"op": "enroll", "request_id": "feedbeef", "name": "X", "consent": True, "groups": [{"a": 1}]})["error"]["code"] == "bad_request"
    # A DEALER sends without REQ's empty delimiter frame: still one request, still answered.
    with Client(served, served.client, zmq.DEALER) as dealer:
        dealer.sock.send(b"not json at all")
        assert json.loads(dealer.sock.recv_multipart()[-1])["error"]["code"] == "bad_request"
        dealer.sock.send_multipart([b"", b'{"v": 1, "op": "status"}'])
        assert json.loads(dealer.sock.recv_multipart()[-1])["ok"]
    with Client(served, served.client) as kiosk:
        assert kiosk.ask({"op": "status"})["ok"]


def test_status_is_answered_while_an_identify_waits(served: Served) -> None:
    with Client(served, served.client) as waiting, Client(served, served.client) as door:
        assert waiting.handshake(20.0) == door.handshake(20.0) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        waiting.send({"op": "identify", "camera": "cam0", "wait_ms": 3000})  # nobody in view: waits it all
        time.sleep(0.2)  # the identify is on a worker by now
        started = time.monotonic()
        status = door.ask({"op": "status"})
        latency_ms = (time.monotonic() - started) * 1000
        identify_done = waiting.sock.poll(0)
        print(json.dumps({"zmq_status_latency_ms_while_identify_waits": round(latency_ms, 1)}))
        assert status is not None and status["ok"]
        assert not identify_done  # status came back first, not queued behind the identify
        identify = waiting.reply(20.0)
        assert identify is not None and identify["status"] == "no_face"


def test_kiosk_enroll_is_bounded_by_enroll_groups_and_validity(served: Served) -> None:
    with Client(served, served.client) as kiosk:
        staff = kiosk.ask({"op": "enroll", "request_id": "feedbeef", "name": "Mallory", "consent": True, "groups": ["staff"]})
        assert staff["error"]["code"] == "group_not_allowed" and "visitors" in staff["error"]["message"]
        decades = kiosk.ask({"op": "enroll", "request_id": "feedbeef", "name": "Mallory", "consent": True, "groups": ["visitors"],
                             "valid_until": int(time.time()) + 40 * 365 * 86400})
        assert decades["error"]["code"] == "validity_too_long"
        # Names go through the one display-name rule (edge/names.py) before anything else is done.
        for name in ("Mallory\u202eniwdlog", "A" * 129, "line\nbreak"):
            refused = kiosk.ask({"op": "enroll", "request_id": "feedbeef", "name": name, "consent": True})
            assert refused["error"]["code"] == "invalid_profile" and name not in refused["error"]["message"], name
        # Within the policy, the request itself is what is missing.
        fine = kiosk.ask({"op": "enroll", "request_id": "feedbeef", "name": "Mallory", "consent": True, "groups": ["visitors"]})
        assert fine["error"]["code"] == "unknown_request"


def test_reload_is_rate_limited(served: Served) -> None:
    with Client(served, served.client) as kiosk:
        assert kiosk.ask({"op": "reload"}) == {"v": 1, "ok": True, "reloading": True}
        again = kiosk.ask({"op": "reload"})
        assert again["error"]["code"] == "rate_limited"
        assert kiosk.ask({"op": "status"})["ok"]


def test_an_endpoint_other_hosts_reach_is_refused_without_curve(tmp_path: Path) -> None:
    config = _config(tmp_path, "tcp://0.0.0.0:7701", f"ipc://{tmp_path}/events", None, None)
    checked = facegate("config", "check", "--config", str(config))
    assert checked.returncode == 1 and "zmq.control: tcp://0.0.0.0:7701 can be reached from other hosts" in checked.stderr
    started = facegate("--config", str(config), "run", "--data-dir", str(tmp_path / "none"), "--source", "x.mp4")
    assert started.returncode == 2 and "zmq.control" in started.stderr and "Traceback" not in started.stderr
    # The same endpoint with CURVE is fine (the key files exist).
    _, secret, _ = write_keypair(tmp_path / "server")
    (tmp_path / "allowed").mkdir()
    curve = _config(tmp_path, "tcp://0.0.0.0:7701", f"ipc://{tmp_path}/events", secret, tmp_path / "allowed")
    assert facegate("config", "check", "--config", str(curve)).returncode == 0
    # What the daemon would refuse at start, the check says too: a secret key others can read.
    secret.chmod(0o644)
    readable = facegate("config", "check", "--config", str(curve))
    assert readable.returncode == 1 and "zmq.curve_secret_key_file" in readable.stderr and "chmod 600" in readable.stderr


def test_the_example_clients_work_with_curve(served: Served) -> None:
    keys = ["--client-key", str(served.client), "--server-key", str(served.server_key)]
    kiosk = subprocess.run([sys.executable, "examples/kiosk_client.py", "--control", served.control, *keys],
                           capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert kiosk.returncode == 0 and kiosk.stdout.startswith("cam0: no_face"), kiosk.stderr
    unkeyed = subprocess.run([sys.executable, "examples/kiosk_client.py", "--control", served.control, "--client-key", str(served.client)],
                             capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert unkeyed.returncode != 0 and "--server-key" in unkeyed.stderr
    # The door client prints the status, then follows events until stopped (nobody is in view).
    door = subprocess.Popen([sys.executable, "examples/door_client.py", "--events", served.events, "--control", served.control, *keys],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        first = door.stdout.readline()
    finally:
        door.terminate()
        door.communicate(timeout=30)
    assert first.strip() == "{", first
