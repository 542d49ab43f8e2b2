"""Kiosk enrollment: an unknown face held for a while, enrolled once the person agrees.

The decider hands the service the samples an unknown face was decided on (`hold`, on the
inference thread); the service keeps their embeddings in memory only, under a random request
id, until `ttl_s` after the face was last in view. A kiosk's `enroll` request (the ZeroMQ
control thread) names that id and the person's profile; the enrollment itself runs on the
thread that owns the gallery (`run_pending`, called every loop turn), is audited through
`on_enrolled`, and consumes the embeddings. Nothing of a held face is ever written anywhere
unless it is enrolled.

This is the only place a kiosk's request reaches templates: the outputs see decisions and
request ids, never embeddings.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge.errors import ApiError, GalleryError
from edge.gallery.records import PersonProfile, PersonRecord
from edge.gallery.search import Gallery

ENROLL_TIMEOUT_S = 5.0


class HeldSample(Protocol):
    embedding: np.ndarray
    quality: float
    ok: bool  # passed the quality gate


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    """What a kiosk asks for, already checked for shape at the socket (edge/outputs/kiosk.py)."""

    request_id: str
    name: str
    groups: tuple[str, ...] = ()
    consent_text: str = ""
    retention_days: int | None = None
    valid_until: int | None = None


@dataclass(slots=True)
class _Held:
    camera: str
    track_id: int
    embeddings: list[np.ndarray] = field(repr=False)
    qualities: list[float]
    expires: float  # monotonic


class EnrollmentService:
    def __init__(
        self,
        ttl_s: float,
        gallery: Callable[[], Gallery],
        on_enrolled: Callable[[PersonRecord, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._gallery = gallery  # the current one: a reload or a hub bundle replaces it
        self._on_enrolled = on_enrolled  # (record, request_id): the audit journal
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[EnrollRequest, _Held, Future[PersonRecord]]] = queue.Queue()

    # -- inference thread ------------------------------------------------------------------

    def hold(self, camera: str, track_id: int, samples: Sequence[HeldSample]) -> str | None:
        """Keeps the gate-passing samples of an unknown face; their request id, or None if none passed."""
        good = [s for s in samples if s.ok]
        if not good:
            return None
        request_id = secrets.token_hex(8)
        held = _Held(camera, track_id, [s.embedding for s in good], [s.quality for s in good], self._clock() + self.ttl_s)
        with self._lock:
            self._held[request_id] = held
        return request_id

    def in_view(self, camera: str, track_ids: set[int]) -> None:
        """The tracks `camera` sees now: their held faces are kept; expired ones are dropped."""
        now = self._clock()
        with self._lock:
            for held in self._held.values():
                if held.camera == camera and held.track_id in track_ids:
                    held.expires = now + self.ttl_s
            for request_id in [r for r, h in self._held.items() if h.expires < now]:
                del self._held[request_id]

    def run_pending(self) -> None:
        """Enrollments asked for since the last call, on the thread that owns the gallery."""
        while True:
            try:
                request, held, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._enroll_now(request, held))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting control thread, which answers with it
                future.set_exception(exc)

    def _enroll_now(self, request: EnrollRequest, held: _Held) -> PersonRecord:
        gallery = self._gallery()
        try:
            profile = PersonProfile(
                name=request.name, groups=request.groups, consent=True, consent_at=int(time.time()),
                consent_text=request.consent_text, retention_days=request.retention_days,
                valid_until=request.valid_until, created_by=f"kiosk:{request.request_id}",
            )
            if gallery.store.find(profile.name) is not None:
                # Adding a stranger's face to an existing person would let them in as that person.
                raise ApiError("invalid_profile", f"a person named {profile.name!r} is already enrolled")
            record = gallery.enroll(profile, held.embeddings, held.qualities)
        except GalleryError as exc:
            raise ApiError("invalid_profile", str(exc)) from exc
        with self._lock:
            self._held.pop(request.request_id, None)
        if self._on_enrolled is not None:
            self._on_enrolled(record, request.request_id)
        return record

    # -- control thread --------------------------------------------------------------------

    def known(self, request_id: str) -> bool:
        with self._lock:
            held = self._held.get(request_id)
            return held is not None and held.expires >= self._clock()

    def enroll(self, request: EnrollRequest, timeout_s: float = ENROLL_TIMEOUT_S) -> PersonRecord:
        """Enrolls the held face of `request.request_id`; ApiError with a documented code when refused."""
        with self._lock:
            held = self._held.get(request.request_id)
            if held is None or held.expires < self._clock():
                raise ApiError("unknown_request", f"request_id {request.request_id!r} is unknown or expired")
        future: Future[PersonRecord] = Future()
        self._jobs.put((request, held, future))
        try:
            return future.result(timeout_s)
        except FutureTimeout as exc:
            future.cancel()
            raise ApiError("busy", "the inference loop did not take the enrollment in time; retry") from exc
