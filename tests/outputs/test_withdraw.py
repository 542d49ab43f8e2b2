"""The `withdraw` verb's rules without a daemon (the real-process attacks are
tests/attacks/test_zmq_withdraw.py): who counts as identified, token expiry and binding, the face
in front changing, the bound on outstanding tokens, and the erasure running only on the thread
that calls `run_pending` (the inference thread)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq.auth

from edge.config import ZmqConfig
from edge.errors import ApiError
from edge.events import DecisionEvent, LivenessEvidence
from edge.outputs.kiosk import Presence
from edge.outputs.withdraw import MAX_TOKENS, Withdrawals, client_key_id
from edge.outputs.zmq_api import CLIENT_KEY
from edge.outputs.zmq_auth import allow_client, write_keypair

UID, OTHER = "ab" * 16, "cd" * 16
THRESHOLD = 0.4


def _event(track_id: int, uid: str | None = UID, score: float = 0.8, decision: str = "grant", live: bool | None = None) -> DecisionEvent:
    liveness = None if live is None else LivenessEvidence(0.9 if live else 0.1, live, 0.5, {}, 3)
    return DecisionEvent(ts=time.time(), camera="kiosk", track_id=track_id, decision=decision, reason="match", person="Ann" if uid else None,
                         person_id=7 if uid else None, person_uid=uid, score=score, threshold=0.5, target_fmr=1e-4, door=None,
                         frames_used=3, quality=0.9, latency_ms=100.0, usable_latency_ms=80.0, first_seen=time.time(), source_t=0.0,
                         box=(0.0, 0.0, 10.0, 10.0), liveness=liveness)


class _Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.keys = {}
        for name in ("kiosk1", "kiosk2"):
            secret = write_keypair(tmp_path / name)[1]
            allow_client(tmp_path / "allowed", secret)
            self.keys[name] = zmq.auth.load_certificate(secret)[0].decode()
        self.policy = ZmqConfig(curve_secret_key_file="x", allowed_clients_dir=str(tmp_path / "allowed"), withdraw_clients=("kiosk1", "kiosk2"),
                                withdraw_confirm_s=10.0)
        self.now, self.erased, self.audited = [100.0], [], []
        self.presence = Presence()
        self.presence.add_camera("kiosk")
        self.withdrawals = Withdrawals(self.presence, lambda pid, uid: self.erased.append((pid, uid)) or True,
                                       lambda kind, body: self.audited.append((kind, body)), lambda: self.policy, lambda: THRESHOLD,
                                       clock=lambda: self.now[0])

    def view(self, *events: DecisionEvent, boxes: dict[int, float] | None = None) -> None:
        for e in events:
            self.presence.decided(e)
        self.presence.update("kiosk", [(e.track_id, (0.0, 0.0, (boxes or {}).get(e.track_id, 10.0), 10.0)) for e in events])

    def ask(self, client: str = "kiosk1", **request: object) -> dict:
        return self.withdrawals.handle({**request, CLIENT_KEY: self.keys.get(client, client)})

    def confirm(self, token: str, client: str = "kiosk1") -> dict:
        """As the control worker does, while the 'inference thread' runs the erasure."""
        out: dict = {}

        def work() -> None:
            try:
                out.update(self.ask(client, token=token, confirm=True))
            except ApiError as exc:
                out["error"] = exc.code

        worker = threading.Thread(target=work)
        worker.start()
        while worker.is_alive():
            self.withdrawals.run_pending()
            worker.join(0.01)
        return out


def test_only_a_live_person_at_the_1to1_threshold_is_identified(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    for event in (_event(1, uid=None, decision="unknown"), _event(2, score=THRESHOLD - 0.01), _event(3, decision="spoof"), _event(4, live=False)):
        s.presence = s.withdrawals.presence = Presence()
        s.presence.add_camera("kiosk")
        s.view(event)
        with pytest.raises(ApiError) as err:
            s.ask()
        assert err.value.code == "not_identified", event
    with pytest.raises(ApiError) as err:
        s.ask(client="someone-else")
    assert err.value.code == "not_allowed"


def test_tokens_expire_are_single_use_and_bound_to_client_and_face(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    s.view(_event(1, live=True))
    asked = s.ask()
    assert asked["status"] == "confirm" and asked["person_uid"] == UID and asked["person"] == "Ann" and asked["expires_in_s"] == 10.0
    s.now[0] += 10.0
    assert s.confirm(asked["token"]) == {"error": "unknown_token"}  # expired (and gone)
    s.now[0] += 1.0
    fresh = s.ask()
    assert s.confirm(fresh["token"], client="kiosk2") == {"error": "unknown_token"}  # another client's; burnt
    assert s.confirm(fresh["token"]) == {"error": "unknown_token"}
    third = s.ask()
    s.view(_event(1, live=True), _event(2, uid=OTHER), boxes={2: 50.0})  # someone else steps closer
    assert s.confirm(third["token"]) == {"error": "face_changed"}
    assert s.erased == [] and s.audited == []
    s.view(_event(1, live=True))
    last = s.ask()
    assert s.confirm(last["token"]) == {"erased": True, "person_uid": UID}
    assert s.erased == [(7, UID)]
    assert s.audited == [("remove", {"person_uid": UID, "by": "kiosk-withdrawal", "client": client_key_id(s.keys["kiosk1"])})]
    assert s.presence.identify("kiosk", 0.0).decision["decision"] == "withdrawn"
    with pytest.raises(ApiError) as err:
        s.ask()
    assert err.value.code == "not_identified"


def test_outstanding_tokens_are_bounded(tmp_path: Path) -> None:
    s = _Setup(tmp_path)
    s.view(_event(1))
    for _ in range(MAX_TOKENS):
        s.ask()
    with pytest.raises(ApiError) as err:
        s.ask()
    assert err.value.code == "busy"
    s.now[0] += 11.0  # expired ones make room
    assert s.ask()["status"] == "confirm"
