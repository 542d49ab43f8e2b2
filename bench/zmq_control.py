"""The ZeroMQ control socket under the issue-19 attacks, against a real `facegate run`. One JSON object.

    .venv/bin/python bench/zmq_control.py [--rounds N]

Starts the daemon on a video of empty frames played in real time (nobody in view, so an
`identify` waits its whole `wait_ms`), CURVE on, one allowed client key. Then:
- `status_latency_ms_*`: per round, an `identify` (wait_ms 1000) from one client, and 100 ms
  later a `status` from another; the status's round trip, and how often it came back before the
  identify's reply (`status_first`: it must be every round);
- `rss_growth_kib_64mib_message`: the daemon's peak RSS (VmHWM) before and after an allowed
  client sends a 64 MiB message (over [zmq] max_message_bytes, dropped by libzmq unread).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zmq
import zmq.auth

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.outputs.zmq_auth import allow_client, write_keypair  # noqa: E402 - after the path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_kib(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1])


def client(ctx: zmq.Context, endpoint: str, secret: Path, server_public: Path) -> zmq.Socket:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.REQ_RELAXED, 1)
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(secret)
    sock.curve_serverkey = zmq.auth.load_certificate(server_public)[0]
    sock.connect(endpoint)
    return sock


def ask(sock: zmq.Socket, request: dict, timeout_ms: int = 20000) -> dict | None:
    sock.send_json({"v": 1, **request})
    return sock.recv_json() if sock.poll(timeout_ms) else None


def empty_video(path: Path, seconds: float, fps: float = 5.0) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for _ in range(int(seconds * fps)):
        out.write(np.zeros((240, 320, 3), np.uint8))
    out.release()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server_public, server_secret, _ = write_keypair(root / "server")
        _, client_secret, _ = write_keypair(root / "kiosk")
        allow_client(root / "allowed", client_secret)
        control = f"tcp://127.0.0.1:{free_port()}"
        (root / "config.toml").write_text(
            "[liveness]\nenabled = false\n[metrics]\nenabled = false\n"
            f'[zmq]\ncontrol = "{control}"\ncurve_secret_key_file = "{server_secret}"\nallowed_clients_dir = "{root / "allowed"}"\n')
        empty_video(root / "empty.avi", seconds=60 + 1.5 * args.rounds)
        subprocess.run([sys.executable, "-m", "edge.cli.main", "keys", "init", "--data-dir", str(root / "data")],
                       cwd=REPO, check=True, capture_output=True)
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(root / "config.toml"), "run",
                                 "--data-dir", str(root / "data"), "--source", str(root / "empty.avi"), "--realtime"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = zmq.Context()
        waiting, door = client(ctx, control, client_secret, server_public), client(ctx, control, client_secret, server_public)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = ask(door, {"op": "status"}, 1000)
                if status and status["cameras"].get("cam0", {}).get("frames", 0) >= 20:
                    break
            latencies, first = [], 0
            for _ in range(args.rounds):
                waiting.send_json({"v": 1, "op": "identify", "camera": "cam0", "wait_ms": 1000})
                time.sleep(0.1)
                started = time.perf_counter()
                ask(door, {"op": "status"})
                latencies.append((time.perf_counter() - started) * 1000)
                first += 0 if waiting.poll(0) else 1
                waiting.poll(20000)
                waiting.recv_json()
            before = peak_kib(proc.pid)
            big = client(ctx, control, client_secret, server_public)
            big.send(b"{" + b" " * (64 * 1024 * 1024) + b"}")
            dropped = not big.poll(2000)
            big.close()
            alive = ask(door, {"op": "status"}) is not None
            growth = peak_kib(proc.pid) - before
        finally:
            waiting.close()
            door.close()
            ctx.term()
            proc.terminate()
            proc.wait(60)
    latencies.sort()
    print(json.dumps({
        "rounds": args.rounds, "status_first": first, "status_latency_ms_p50": round(statistics.median(latencies), 2),
        "status_latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 2), "status_latency_ms_max": round(latencies[-1], 2),
        "rss_growth_kib_64mib_message": growth, "64mib_message_unanswered": dropped, "serving_after": alive,
        "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
