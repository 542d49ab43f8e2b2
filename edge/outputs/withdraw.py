"""Consent withdrawal at the kiosk: the `withdraw` control verb (docs/door.md#consent-withdrawal).

Two requests, so that nothing erases a person by accident or by replay:
1. `withdraw` (camera, wait_ms): the largest face in view must be recognised — a person, not a
   spoof, live when liveness ran, at or above the gallery's 1:1 threshold — and the reply names
   them with a random token, good for `[zmq] withdraw_confirm_s`, bound to the asking client's
   CURVE key, the camera, the track and the person.
2. `withdraw` (token, confirm: true): the token is removed whatever follows (single use); it must
   be this client's and unexpired, and the face in front must still be that track and person.
   The erasure then runs on the inference thread (the one that owns the gallery), and a `remove`
   audit record by `kiosk-withdrawal` names the person's uid and the client's key id; the sync
   agent turns that record into the signed withdrawal the hub acts on (sync/withdrawals.py).

Only clients listed in `[zmq] withdraw_clients` (key names in `allowed_clients_dir`) may ask, and
only over CURVE: without it there is no client key to bind a token to. Who may ask is checked
before anything else, so a refused client learns nothing about who stands at the kiosk.
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import ZmqConfig
from edge.errors import ApiError, KeyfileError
from edge.outputs.zmq_api import CLIENT_KEY, field_of
from edge.outputs.zmq_auth import PUBLIC_SUFFIX, read_public_key

if TYPE_CHECKING:
    from edge.outputs.kiosk import Presence

MAX_TOKENS = 32  # confirmations outstanding at once; more are answered `busy`
MAX_WAIT_MS = 10000
ERASE_TIMEOUT_S = 5.0
BY = "kiosk-withdrawal"  # the `by` of the remove audit record (the hub checks it)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class _Token:
    client: str
    camera: str
    track_id: int
    person_id: int
    uid: str
    person: str | None
    expires: float  # monotonic


def client_key_id(z85: str) -> str:
    """What the audit record names a client by: 16 hex of SHA-256 of its Z85 public key."""
    return hashlib.sha256(z85.encode()).hexdigest()[:16]


def allowed_keys(policy: ZmqConfig) -> frozenset[str]:
    """The Z85 public keys of `[zmq] withdraw_clients` (NAME -> <allowed_clients_dir>/NAME.key)."""
    if not policy.withdraw_clients or not policy.allowed_clients_dir:
        return frozenset()
    keys = set()
    for name in policy.withdraw_clients:
        if not _NAME.match(name):
            continue
        try:
            keys.add(read_public_key(Path(policy.allowed_clients_dir) / f"{name}{PUBLIC_SUFFIX}").decode())
        except KeyfileError:  # a key removed from the allow-list may withdraw no more
            continue
    return frozenset(keys)


class Withdrawals:
    """The `withdraw` handler (control threads) and the erasures it asks for (`run_pending`, inference thread)."""

    def __init__(self, presence: Presence, erase: Callable[[int, str], bool], audit: Callable[[str, dict[str, Any]], object],
                 policy: Callable[[], ZmqConfig], threshold: Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self.presence, self._erase, self._audit, self.policy, self._threshold, self._clock = presence, erase, audit, policy, threshold, clock
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[_Token, Future[bool]]] = queue.Queue()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        client = request.get(CLIENT_KEY)
        policy = self.policy()
        if not isinstance(client, str) or client not in allowed_keys(policy):
            raise ApiError("not_allowed", "withdraw: this client may not erase persons ([zmq] withdraw_clients, over CURVE)")
        if "token" in request:
            return self._confirm(request, client)
        return self._ask(request, client, policy)

    def _ask(self, request: dict[str, Any], client: str, policy: ZmqConfig) -> dict[str, Any]:
        camera = self.presence.asked_camera(request)
        wait_s = min(max(field_of(request, "wait_ms", int, 0), 0), MAX_WAIT_MS) / 1000.0
        view = self.presence.identify(camera, wait_s)
        who = None if view is None else view.who
        if who is None or who.score is None or who.score < self._threshold() or not who.live:
            raise ApiError("not_identified", "withdraw: no live face recognised at the 1:1 threshold in front of the kiosk")
        assert view is not None
        now = self._clock()
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens = {t: v for t, v in self._tokens.items() if v.expires > now}
            if len(self._tokens) >= MAX_TOKENS:
                raise ApiError("busy", f"{MAX_TOKENS} withdrawals already wait for their confirmation; retry")
            self._tokens[token] = _Token(client, camera, view.track_id, who.person_id, who.uid, who.person, now + policy.withdraw_confirm_s)
        return {"camera": camera, "status": "confirm", "token": token, "person": who.person, "person_uid": who.uid,
                "expires_in_s": policy.withdraw_confirm_s}

    def _confirm(self, request: dict[str, Any], client: str) -> dict[str, Any]:
        asked = field_of(request, "token", str)
        if field_of(request, "confirm", bool, False) is not True:
            raise ApiError("bad_request", 'withdraw: a token is confirmed with "confirm": true')
        with self._lock:
            token = self._tokens.pop(asked, None) if len(asked) == 32 else None  # single use, whoever presents it
        if token is None or token.client != client or token.expires <= self._clock():
            raise ApiError("unknown_token", "withdraw: this token was never issued to this client, was used already, or expired")
        view = self.presence.identify(token.camera, 0.0)
        if view is None or view.track_id != token.track_id or view.who is None or view.who.uid != token.uid:
            raise ApiError("face_changed", "withdraw: the face in front is not the one the token was issued for; ask again")
        future: Future[bool] = Future()
        self._jobs.put((token, future))
        try:
            erased = future.result(ERASE_TIMEOUT_S)
        except FutureTimeout as exc:
            future.cancel()
            raise ApiError("busy", "the inference loop did not take the erasure in time; ask again") from exc
        if not erased:
            raise ApiError("face_changed", "withdraw: that person is no longer in the gallery")
        self.presence.withdrawn(token.camera, token.track_id)
        return {"erased": True, "person_uid": token.uid}

    def run_pending(self) -> None:
        """Erasures confirmed since the last call, on the thread that owns the gallery; each one audited."""
        while True:
            try:
                token, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                erased = self._erase(token.person_id, token.uid)
                if erased:
                    self._audit("remove", {"person_uid": token.uid, "by": BY, "client": client_key_id(token.client)})
                future.set_result(erased)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting control thread, which answers with it
                future.set_exception(exc)
