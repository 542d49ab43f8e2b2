"""CURVE keys, the allow-list and the server sockets' options (edge/outputs/zmq_auth.py), in process;
tests/attacks/test_zmq_control.py tries them against a running `facegate run`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

from edge.config import ZmqConfig
from edge.errors import ConfigError, KeyfileError, OutputError
from edge.outputs.zmq_api import ControlServer
from edge.outputs.zmq_auth import (
    AllowList,
    allow_client,
    read_server_keys,
    server_socket,
    start_authenticator,
    write_keypair,
)

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_a_private_secret_and_a_public_file_in_zeromq_format(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edge.cli.main", "zmq", "keygen", str(tmp_path / "server"), "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    made = json.loads(out.stdout)
    secret, public = Path(made["secret_key_file"]), Path(made["public_key_file"])
    assert _mode(secret) == 0o600
    # pyzmq (like czmq and every other binding) reads them as its own certificates.
    assert zmq.auth.load_certificate(public) == (made["public_key"].encode(), None)
    assert zmq.auth.load_certificate(secret)[0] == made["public_key"].encode()
    again = subprocess.run([sys.executable, "-m", "edge.cli.main", "zmq", "keygen", str(tmp_path / "server")],
                           capture_output=True, text=True, cwd=REPO, check=False)
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_allow_copies_only_the_public_key_once(tmp_path: Path) -> None:
    _, secret, public = write_keypair(tmp_path / "kiosk1")
    allowed = tmp_path / "allowed"
    target, added = allow_client(allowed, secret)  # handed the secret file by mistake
    assert added and target == allowed / "kiosk1.key"
    assert zmq.auth.load_certificate(target) == (public.encode(), None)
    assert allow_client(allowed, tmp_path / "kiosk1.key") == (target, False)
    with pytest.raises(KeyfileError, match="not a ZeroMQ CURVE certificate"):
        allow_client(allowed, tmp_path / "missing.key")


def test_the_allow_list_follows_its_directory_and_refuses_a_writable_one(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    listing = AllowList(allowed)
    _, secret, public = write_keypair(tmp_path / "late")
    assert not listing.callback("facegate", public.encode())
    allow_client(allowed, secret)
    assert listing.callback("facegate", public.encode())  # no restart needed
    (allowed / "late.key").unlink()
    assert not listing.callback("facegate", public.encode())  # nor to revoke
    allowed.chmod(0o777)
    with pytest.raises(KeyfileError, match="writable by group or others"):
        AllowList(allowed)


def test_a_readable_secret_key_or_a_public_one_is_refused(tmp_path: Path) -> None:
    public_path, secret_path, _ = write_keypair(tmp_path / "server")
    with pytest.raises(KeyfileError, match="holds no secret key"):
        read_server_keys(public_path)  # the public file by mistake: said so, not "mode 0644"
    secret_path.chmod(0o640)
    with pytest.raises(KeyfileError, match="chmod 600"):
        read_server_keys(secret_path)


def test_a_curve_socket_is_never_made_without_its_authenticator(tmp_path: Path) -> None:
    _, secret, _ = write_keypair(tmp_path / "server")
    (tmp_path / "allowed").mkdir()
    zcfg = ZmqConfig(control="tcp://127.0.0.1:*", curve_secret_key_file=str(secret), allowed_clients_dir=str(tmp_path / "allowed"))
    ctx = zmq.Context()
    try:
        # libzmq lets any client key in when no ZAP handler answers: refuse to build that socket.
        with pytest.raises(OutputError, match="no authenticator"):
            server_socket(ctx, zmq.ROUTER, zcfg.control, zcfg)
    finally:
        ctx.term()


def test_an_ipc_socket_file_is_only_its_owners(tmp_path: Path) -> None:
    zcfg = ZmqConfig(control=f"ipc://{tmp_path}/control")
    ctx = zmq.Context()
    server = ControlServer(ctx, zcfg, {"status": lambda _r: {}}).start()
    try:
        assert _mode(tmp_path / "control") == 0o600
    finally:
        server.close()
        ctx.term()


def test_a_handler_that_raises_is_answered_internal_and_the_socket_serves_on(tmp_path: Path) -> None:
    zcfg = ZmqConfig(control=f"ipc://{tmp_path}/control")
    ctx = zmq.Context()

    def broken(_request: dict) -> dict:
        raise RuntimeError("bug")

    server = ControlServer(ctx, zcfg, {"status": lambda _r: {"fine": True}, "identify": broken, "enroll": lambda _r: {"x": object()}},
                           slow=("identify", "enroll")).start()
    req = ctx.socket(zmq.REQ)
    req.connect(zcfg.control)
    try:
        for op, code in (("identify", "internal"), ("enroll", "internal")):
            req.send_json({"v": 1, "op": op})
            assert req.poll(5000)
            assert req.recv_json()["error"]["code"] == code
        req.send_json({"v": 1, "op": "status"})
        assert req.poll(5000) and req.recv_json() == {"v": 1, "ok": True, "fine": True}
    finally:
        req.close(0)
        server.close()
        ctx.term()


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:7701", "tcp://*:7701", "tcp://eth0:7701", "tcp://192.168.1.20:7701",
                                      "tcp://127.0.0.1.example.com:7701", "ipc://relative/path", "ipc://@abstract", "inproc://x"])
def test_without_curve_only_ipc_and_loopback_endpoints_are_accepted(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="zmq.control"):
        ZmqConfig(control=endpoint)


def test_loopback_and_ipc_endpoints_need_no_curve_and_curve_needs_its_allow_list() -> None:
    for endpoint in ("tcp://127.0.0.1:7701", "tcp://[::1]:7701", "tcp://localhost:7701", "ipc:///run/facegate/control"):
        assert ZmqConfig(control=endpoint, events=endpoint.replace("7701", "7700")).control == endpoint
    assert ZmqConfig(control="tcp://0.0.0.0:7701", curve_secret_key_file="s.key_secret", allowed_clients_dir="d").control
    with pytest.raises(ConfigError, match="allowed_clients_dir"):
        ZmqConfig(control="tcp://0.0.0.0:7701", curve_secret_key_file="s.key_secret")


def test_start_authenticator_is_a_no_op_without_curve() -> None:
    ctx = zmq.Context()
    try:
        assert start_authenticator(ctx, ZmqConfig()) is None
    finally:
        ctx.term()
