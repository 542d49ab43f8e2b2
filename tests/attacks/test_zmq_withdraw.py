"""Issue 22, consent withdrawal at the kiosk, written as an attacker would try it, against a real
`facegate run` with CURVE: the person in front of the camera (an enrolled LFW face on a live MJPEG
camera) is erased only by a client in `[zmq] withdraw_clients`, after a confirmation whose token is
single use and bound to the asking client's key. An unauthenticated client gets no answer at all,
an allowed client without the right gets `not_allowed`, a token presented by another client or a
second time is `unknown_token`; the confirmed erasure is audited (`remove` by kiosk-withdrawal)
and the face then answers `withdrawn`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from edge.audit.journal import AuditLog
from edge.outputs.withdraw import client_key_id
from edge.outputs.zmq_auth import allow_client, write_keypair
from tests.attacks.test_zmq_control import NO_REPLY_S, Client, Served, facegate
from tests.conftest import DATA, unavailable
from tests.support.mjpeg_server import MjpegServer, free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
LFW = DATA / "lfw" / "images" / "Tony_Blair"
ENROLL = ("Tony_Blair_0018.jpg", "Tony_Blair_0032.jpg", "Tony_Blair_0048.jpg")
IN_FRONT = "Tony_Blair_0064.jpg"


@pytest.fixture(scope="module")
def kiosk(model_store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path, dict[str, Path]]]:
    if not all((LFW / f).exists() for f in (*ENROLL, IN_FRONT)):
        unavailable(f"LFW images not found under {LFW}")
    root = tmp_path_factory.mktemp("withdraw")
    server_pub, server_secret, _ = write_keypair(root / "server")
    keys = {name: write_keypair(root / name)[1] for name in ("kiosk1", "kiosk2", "viewer", "stranger")}
    for name in ("kiosk1", "kiosk2", "viewer"):
        allow_client(root / "allowed", keys[name])
    control = f"tcp://127.0.0.1:{free_port()}"
    config = root / "config.toml"
    config.write_text(
        "[liveness]\nenabled = false\n[metrics]\nenabled = false\n"
        f'[zmq]\ncontrol = "{control}"\ncurve_secret_key_file = "{server_secret}"\nallowed_clients_dir = "{root / "allowed"}"\n'
        'withdraw_clients = ["kiosk1", "kiosk2"]\nwithdraw_confirm_s = 60.0\n'
    )
    data = root / "data"
    enrolled = facegate("--config", str(config), "gallery", "enroll", "--data-dir", str(data), "--person", "Tony Blair", *(str(LFW / f) for f in ENROLL))
    assert enrolled.returncode == 0, enrolled.stderr
    camera = MjpegServer([(LFW / IN_FRONT).read_bytes()], free_port(), fps=4.0).start()
    stderr = (root / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(data), "--source", camera.url],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    served = Served(proc, control, "", server_pub, keys["kiosk1"], keys["stranger"], config)
    try:
        with Client(served, keys["kiosk1"]) as probe:
            assert wait_for(lambda: proc.poll() is not None or probe.ask({"op": "status"}, 1.0) is not None, 120), (root / "stderr.txt").read_text()
            assert proc.poll() is None, (root / "stderr.txt").read_text()
        yield served, data, keys
    finally:
        proc.terminate()
        proc.wait(60)
        camera.stop()
        stderr.close()


def _known(client: Client) -> dict:
    answer: dict = {}

    def known() -> bool:
        nonlocal answer
        answer = client.ask({"op": "identify", "wait_ms": 2000}) or {}
        return answer.get("status") == "known"

    assert wait_for(known, 120), answer
    return answer


def test_withdrawal_needs_the_right_the_confirmation_and_the_same_client(kiosk: tuple[Served, Path, dict[str, Path]]) -> None:
    served, data, keys = kiosk
    # Unauthenticated: no CURVE at all, or a key nobody allowed — the handshake never completes.
    for secret in (None, keys["stranger"]):
        with Client(served, secret) as someone:
            assert someone.ask({"op": "withdraw"}, NO_REPLY_S) is None
    with Client(served, keys["kiosk1"]) as one, Client(served, keys["kiosk2"]) as two, Client(served, keys["viewer"]) as viewer:
        assert _known(one)["person"] == "Tony Blair"
        # Allowed in, but not allowed to erase; a client-written `_client_key` changes nothing.
        refused = viewer.ask({"op": "withdraw", "_client_key": zmq.auth.load_certificate(keys["kiosk1"])[0].decode()})
        assert refused["error"]["code"] == "not_allowed", refused
        asked = one.ask({"op": "withdraw", "wait_ms": 2000})
        assert asked["ok"] and asked["status"] == "confirm" and asked["person"] == "Tony Blair" and len(asked["token"]) == 32, asked
        uid = asked["person_uid"]
        # Another client's token is refused — and the token is gone: it was taken out when shown.
        assert two.ask({"op": "withdraw", "token": asked["token"], "confirm": True})["error"]["code"] == "unknown_token"
        assert one.ask({"op": "withdraw", "token": asked["token"], "confirm": True})["error"]["code"] == "unknown_token"
        assert one.ask({"op": "withdraw", "token": "00" * 16, "confirm": True})["error"]["code"] == "unknown_token"  # never issued
        again = one.ask({"op": "withdraw", "wait_ms": 2000})
        assert again["ok"] and again["token"] != asked["token"]
        assert one.ask({"op": "withdraw", "token": again["token"]})["error"]["code"] == "bad_request"  # no "confirm": true; token kept
        assert _known(two)["person"] == "Tony Blair"  # nothing erased so far
        erased = one.ask({"op": "withdraw", "token": again["token"], "confirm": True})
        assert erased == {"v": 1, "ok": True, "erased": True, "person_uid": uid}, erased
        # Replayed: single use.
        assert one.ask({"op": "withdraw", "token": again["token"], "confirm": True})["error"]["code"] == "unknown_token"
        now = one.ask({"op": "identify"})
        assert now["status"] == "withdrawn" and now["person"] is None, now
        assert one.ask({"op": "status"})["people"] == 0
        assert one.ask({"op": "withdraw"})["error"]["code"] == "not_identified"  # nobody recognised in front any more
    example = subprocess.run([sys.executable, "examples/kiosk_client.py", "--control", served.control, "--withdraw", "--yes",
                              "--client-key", str(keys["kiosk2"]), "--server-key", str(served.server_key)],
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert example.returncode != 0 and "withdraw: not_identified" in example.stderr, example  # nobody left to erase
    listed = facegate("--config", str(served.config), "gallery", "list", "--data-dir", str(data), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout
    with AuditLog.open(data) as journal:
        removes = [r.body for r in journal.since(0, 100000) if r.kind == "remove"]
    kiosk1 = zmq.auth.load_certificate(keys["kiosk1"])[0].decode()
    assert removes == [{"person_uid": uid, "by": "kiosk-withdrawal", "client": client_key_id(kiosk1)}]
