"""The kiosk: who is in front of each camera now, and the ZeroMQ control requests about it.

`Kiosk` is a pipeline observer. The inference thread writes (the confirmed tracks per frame,
each decision); the ZeroMQ control thread reads (`identify`) and asks (`enroll`, `status`,
`reload`). An unknown face's decision carries the request id the enrollment service
(edge/gallery/enrollment.py) holds its embeddings under; the kiosk never sees embeddings, it
passes the customer's consent and profile to that service. `withdraw` (a recognised customer's
erasure, after a confirmation) is edge/outputs/withdraw.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge.config import ZmqConfig
from edge.errors import ApiError, PersonNameError
from edge.events import ChallengeEvent, DecisionEvent
from edge.gallery.enrollment import EnrollmentService, EnrollRequest
from edge.names import check_person_name
from edge.outputs.zmq_api import field_of
from edge.video.observer import Observer

if TYPE_CHECKING:
    from edge.outputs.withdraw import Withdrawals
    from edge.video.capture import Frame
    from edge.video.pipeline import CameraState, Pipeline

MAX_IDENTIFY_WAIT_MS = 10000
SLOW_OPS = ("identify", "enroll", "withdraw")  # they wait (for a decision, for the inference loop): off the socket thread
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Who:
    """Whom a decided face was recognised as, for `withdraw` (never sent as such)."""

    person_id: int
    uid: str
    person: str | None
    score: float | None
    live: bool  # not a spoof, and live when liveness ran


@dataclass(frozen=True, slots=True)
class InView:
    track_id: int
    area: float  # box area in pixels: the largest face is the one at the kiosk
    decision: dict[str, Any] | None  # None: not decided yet
    request_id: str | None
    who: Who | None = None


class Presence:
    """The faces in view per camera and the latest decision about each."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._views: dict[str, list[InView]] = {}
        self._labels: dict[tuple[str, int], tuple[dict[str, Any], str | None]] = {}
        self._requests: dict[str, tuple[str, int]] = {}  # request id -> (camera, track id)
        self._challenges: dict[tuple[str, int], dict[str, Any]] = {}  # step-up challenges pending
        self._who: dict[tuple[str, int], Who] = {}

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._views)

    def asked_camera(self, request: dict[str, Any]) -> str:
        """The request's `camera` (may be left out when there is one), or `unknown_camera`."""
        cameras = self.cameras()
        camera = field_of(request, "camera", str, cameras[0] if len(cameras) == 1 else ...)
        if camera not in cameras:
            raise ApiError("unknown_camera", f"camera {camera!r}: one of {', '.join(cameras)}")
        return camera

    def add_camera(self, camera: str) -> None:
        with self._lock:
            self._views.setdefault(camera, [])

    def asked(self, event: ChallengeEvent) -> None:
        with self._lock:
            self._challenges[(event.camera, event.track_id)] = event.body

    def challenge(self, camera: str, track_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._challenges.get((camera, track_id))

    def decided(self, event: DecisionEvent) -> None:
        with self._lock:
            self._challenges.pop((event.camera, event.track_id), None)
            self._labels[(event.camera, event.track_id)] = (_summary(event), event.request_id)
            if event.person_uid is not None and event.person_id is not None and event.decision != "spoof":
                live = event.liveness is None or event.liveness.live
                self._who[(event.camera, event.track_id)] = Who(event.person_id, event.person_uid, event.person, event.score, live)
            if event.request_id is not None:
                self._requests[event.request_id] = (event.camera, event.track_id)
            self._lock.notify_all()

    def update(self, camera: str, tracks: list[tuple[int, tuple[float, float, float, float]]]) -> None:
        """The confirmed tracks in view of `camera` now (id, box)."""
        with self._lock:
            views = []
            for track_id, (x1, y1, x2, y2) in tracks:
                label, request_id = self._labels.get((camera, track_id), (None, None))
                views.append(InView(track_id, (x2 - x1) * (y2 - y1), label, request_id, self._who.get((camera, track_id))))
            gone = {tid for (cam, tid) in self._labels if cam == camera} - {v.track_id for v in views}
            for track_id in gone:
                del self._labels[(camera, track_id)]
                self._who.pop((camera, track_id), None)
            self._requests = {r: key for r, key in self._requests.items() if key in self._labels}
            in_view = {(camera, v.track_id) for v in views}
            self._challenges = {k: c for k, c in self._challenges.items() if k[0] != camera or k in in_view}
            self._views[camera] = views
            self._lock.notify_all()

    def identify(self, camera: str, wait_s: float) -> InView | None:
        """The largest face in view, waiting up to `wait_s` for one that is decided."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                views = sorted(self._views.get(camera, []), key=lambda v: v.area, reverse=True)
                if views and views[0].decision is not None:
                    return views[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return views[0] if views else None
                self._lock.wait(left)

    def withdrawn(self, camera: str, track_id: int) -> None:
        """The face in view was erased (`withdraw`): it answers `withdrawn`, and nobody, from now on."""
        with self._lock:
            key = (camera, track_id)
            self._who.pop(key, None)
            if key not in self._labels:
                return
            label = dict(self._labels[key][0], decision="withdrawn", person=None, reason="withdrawn")
            self._labels[key] = (label, None)
            self._views[camera] = [InView(v.track_id, v.area, label, None) if v.track_id == track_id else v for v in self._views.get(camera, [])]
            self._lock.notify_all()

    def enrolled(self, request_id: str, person: str) -> None:
        """The request became `person`: the face in view now answers as them."""
        with self._lock:
            key = self._requests.pop(request_id, None)
            if key is None or key not in self._labels:
                return
            label = dict(self._labels[key][0], decision="enrolled", person=person, reason="enrolled")
            self._labels[key] = (label, None)
            camera, track_id = key
            self._views[camera] = [
                InView(v.track_id, v.area, label, None) if v.track_id == track_id else v for v in self._views.get(camera, [])
            ]
            self._lock.notify_all()


class Kiosk(Observer):
    """The control socket's handlers (`identify`, `enroll`, `status`, `reload`) and what they read."""

    name = "kiosk"

    def __init__(
        self,
        enrollment: EnrollmentService | None,
        status: Callable[[], dict[str, Any]],
        reload: Callable[[], bool],
        unknown_ttl_s: float,
        policy: Callable[[], ZmqConfig] = ZmqConfig,
        clock: Callable[[], float] = time.time,
        presence: Presence | None = None,
        withdrawals: Withdrawals | None = None,
    ) -> None:
        self.presence = presence or Presence()
        self.withdrawals = withdrawals  # `withdraw` (edge/outputs/withdraw.py); None: refused as not_allowed
        self.enrollment = enrollment
        self._status, self._reload = status, reload
        self.unknown_ttl_s = unknown_ttl_s
        # The [zmq] table in force (read per request, so a reload's enroll_groups apply at once).
        self.policy, self.clock = policy, clock
        self._reload_lock = threading.Lock()
        # Enrolls run on the control socket's workers; one at a time, as the inference loop takes
        # them anyway, so two asks for one request id cannot both turn that face into a person.
        self._enroll_lock = threading.Lock()
        self._last_reload: float | None = None  # monotonic

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"identify": self.identify, "enroll": self.enroll, "withdraw": self.withdraw, "status": lambda _r: self._status(), "reload": self.reload}

    # -- inference thread ------------------------------------------------------------------

    def on_start(self, pipeline: Pipeline) -> None:
        for camera in pipeline.states:
            self.presence.add_camera(camera)

    def on_frame(self, state: CameraState, frame: Frame, seconds: float) -> None:
        confirmed = [(t.track_id, t.box) for t in state.tracker.tracks if t.confirmed]
        self.presence.update(state.cam.name, confirmed)
        if self.enrollment is not None:
            self.enrollment.in_view(state.cam.name, {track_id for track_id, _ in confirmed})

    def on_decision(self, event: DecisionEvent) -> None:
        self.presence.decided(event)

    def on_challenge(self, event: ChallengeEvent) -> None:
        self.presence.asked(event)

    def on_tick(self) -> None:
        if self.enrollment is not None:
            self.enrollment.run_pending()
        if self.withdrawals is not None:
            self.withdrawals.run_pending()

    # -- control thread --------------------------------------------------------------------

    def identify(self, request: dict[str, Any]) -> dict[str, Any]:
        camera = self.presence.asked_camera(request)
        wait_ms = field_of(request, "wait_ms", int, 0)
        view = self.presence.identify(camera, min(max(wait_ms, 0), MAX_IDENTIFY_WAIT_MS) / 1000.0)
        if view is None:
            return {"camera": camera, "status": "no_face"}
        if view.decision is None:
            # A face asked for a step-up challenge is pending too; the kiosk can show what is asked.
            asked = self.presence.challenge(camera, view.track_id)
            return {"camera": camera, "status": "pending", "track_id": view.track_id, **({"challenge": asked} if asked else {})}
        status = "unknown" if view.request_id else ("known" if view.decision["person"] else "unrecognised")
        if view.decision.get("decision") == "withdrawn":
            status = "withdrawn"
        out = {"camera": camera, "status": status, **view.decision}
        if view.request_id:
            out.update(request_id=view.request_id, expires_in_s=self.unknown_ttl_s)
        return out

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        # What the kiosk may ask is checked before whether the request exists: a refusal then says
        # nothing about which request ids are live.
        policy = self.policy()
        asked = EnrollRequest(
            request_id=field_of(request, "request_id", str),
            name=_checked_name(field_of(request, "name", str)),
            groups=self._groups(request, policy),
            consent_text=field_of(request, "consent_text", str, ""),
            retention_days=self._retention_days(request, policy),
            valid_until=self._valid_until(request, policy),
        )
        request_id = asked.request_id
        if field_of(request, "consent", bool, False) is not True:
            raise ApiError("consent_required", 'enroll needs "consent": true — the person agreed to be enrolled')
        with self._enroll_lock:
            if self.enrollment is None or not self.enrollment.known(request_id):
                raise ApiError("unknown_request", f"request_id {request_id!r} is unknown or expired")
            record = self.enrollment.enroll(asked)
        self.presence.enrolled(request_id, record.profile.name)
        return {"person": record.profile.name, "templates": record.n_templates, "uid": record.uid}

    @staticmethod
    def _groups(request: dict[str, Any], policy: ZmqConfig) -> tuple[str, ...]:
        groups = field_of(request, "groups", list, [])
        if not all(isinstance(g, str) for g in groups):
            raise ApiError("bad_request", "groups: a list of group names (strings)")
        # A kiosk is not an admin console: whoever can reach it must not make themselves staff.
        refused = sorted(set(groups) - set(policy.enroll_groups))
        if refused:
            allowed = ", ".join(policy.enroll_groups) or "none ([zmq] enroll_groups is empty)"
            raise ApiError("group_not_allowed", f"groups {', '.join(refused)}: a kiosk may enroll into {allowed}")
        return tuple(groups)

    def _valid_until(self, request: dict[str, Any], policy: ZmqConfig) -> int:
        latest = int(self.clock()) + policy.enroll_max_valid_days * DAY_S
        asked = field_of(request, "valid_until", (int, type(None)), None)
        if asked is None:
            return latest  # a kiosk enrollment never lasts forever by leaving the field out
        if asked > latest:
            raise ApiError("validity_too_long", f"valid_until: at most {policy.enroll_max_valid_days} days from now "
                           f"([zmq] enroll_max_valid_days), i.e. <= {latest}")
        return asked

    @staticmethod
    def _retention_days(request: dict[str, Any], policy: ZmqConfig) -> int | None:
        asked = field_of(request, "retention_days", (int, type(None)), None)
        if asked is None:
            return None  # the site's [privacy] group_retention_days, bounded by valid_until anyway
        if isinstance(asked, bool) or asked < 1:
            raise ApiError("bad_request", "retention_days: a whole number of days, at least 1")
        # valid_until already ends a kiosk enrollment within enroll_max_valid_days; a longer
        # retention would be a promise to the customer the device does not keep.
        if asked > policy.enroll_max_valid_days:
            raise ApiError("retention_too_long", f"retention_days: at most {policy.enroll_max_valid_days} "
                           "([zmq] enroll_max_valid_days)")
        return asked

    def withdraw(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.withdrawals is None:
            raise ApiError("not_allowed", "withdraw: not offered by this daemon")
        return self.withdrawals.handle(request)

    def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        # Each reload reopens the gallery: a client looping on it would keep the door busy.
        with self._reload_lock:
            now, gap = time.monotonic(), self.policy().reload_min_interval_s
            if self._last_reload is not None and now - self._last_reload < gap:
                wait = gap - (now - self._last_reload)
                raise ApiError("rate_limited", f"reload: at most one per {gap:g} s ([zmq] reload_min_interval_s); retry in {wait:.0f} s")
            if not self._reload():
                raise ApiError("busy", "this daemon cannot reload (no config file to re-read)")
            self._last_reload = now
        return {"reloading": True}


def _checked_name(name: str) -> str:
    """The shared display-name rule (edge/names.py), answered before any work is done."""
    try:
        return check_person_name(name)
    except PersonNameError as exc:
        raise ApiError("invalid_profile", str(exc)) from exc


def _summary(e: DecisionEvent) -> dict[str, Any]:
    return {"decision": e.decision, "person": e.person, "score": None if e.score is None else round(e.score, 4),
            "reason": e.reason, "track_id": e.track_id, "ts": round(e.ts, 3)}
