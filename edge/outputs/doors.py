"""Wiring: pipeline decisions → door rules and state → relay, Wiegand, OSDP and ZeroMQ.

`DoorOutputs` is a pipeline `Observer`. On the inference thread it only records and queues
(a decision, the faces in view, the time of the last frame); the outputs thread drives the
doors — relock timers, contacts, health, relays, Wiegand pulses, OSDP — and owns the event
socket, so a slow output or a wedged inference loop never stalls the other. Kiosk enrollments
arrive on the control thread and run on the inference thread (`on_tick`), which owns the
gallery.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import zmq

from edge.access.door_state import DoorEvent, DoorMachine
from edge.access.rules import AreaRegister, CameraRules, DoorRules
from edge.config import Config, DoorConfig
from edge.errors import ApiError, ConfigError, GalleryError
from edge.gallery.records import PersonProfile, PersonRecord
from edge.outputs.gpio import LineOpener, Lines, open_gpiod
from edge.outputs.kiosk import Presence
from edge.outputs.osdp import OsdpPanel, OsdpReader, open_osdp
from edge.outputs.wiegand import WiegandOut, frame
from edge.outputs.zmq_api import ControlServer, EventPublisher, field_of
from edge.video.decide import Decision, Sample
from edge.video.pipeline import CameraState, Observer, Pipeline, RunSummary

log = logging.getLogger(__name__)

TICK_S = 0.02  # outputs thread: relock timers, contacts and health are checked this often
ENROLL_TIMEOUT_S = 5.0
MAX_IDENTIFY_WAIT_MS = 10000
FAIL_SAFE_HOLD_S = 6553.5  # longest OSDP output timer: a fail-safe release lasts until health returns


@dataclass(slots=True)
class Door:
    cfg: DoorConfig
    machine: DoorMachine
    rules: DoorRules
    lines: Lines | None = None
    wiegand: WiegandOut | None = None
    osdp: OsdpReader | OsdpPanel | None = None
    relay_on: bool = False
    last_events: list[dict[str, Any]] = field(default_factory=list)
    # The machine and the relay are driven from two threads: a grant straight from the
    # inference thread (no hand-over on the latency path), timers from the outputs thread.
    lock: threading.Lock = field(default_factory=threading.Lock)


class DoorOutputs(Observer):
    def __init__(self, cfg: Config, open_lines: LineOpener = open_gpiod,
                 osdp_opener: Callable[[DoorConfig], OsdpReader | OsdpPanel] = open_osdp,
                 on_enrolled: Callable[[PersonRecord, str], None] | None = None) -> None:
        self.cfg = cfg
        self.on_enrolled = on_enrolled  # (record, request_id), on the inference thread: the audit journal
        self.open_lines = open_lines
        self.osdp_opener = osdp_opener
        self.presence = Presence(cfg.zmq.unknown_ttl_s)
        self.areas = AreaRegister()
        self.doors: dict[str, Door] = {}  # by camera
        self.last_frame: dict[str, float] = {}
        self.queue: queue.Queue[tuple[Decision, str | None, int | None, list[DoorEvent]]] = queue.Queue()
        self.jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self.stop = threading.Event()
        self.ctx = zmq.Context()
        # Bound now, before the cameras open: a taken endpoint fails at start, and subscribers
        # have time to join before the first decision (PUB drops what nobody subscribed to yet).
        self.publisher = EventPublisher(self.ctx, cfg.zmq.events) if cfg.zmq.events else None
        self.control: ControlServer | None = None
        self.thread = threading.Thread(target=self._run, name="door-outputs", daemon=True)
        self.pipeline: Pipeline | None = None

    # -- inference thread ------------------------------------------------------------------

    def on_start(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        now = time.monotonic()
        for camera in pipeline.states:
            self.presence.add_camera(camera)
            self.last_frame[camera] = now
        for door_cfg in self.cfg.door:
            if door_cfg.camera not in pipeline.states:
                raise ConfigError(f"door {door_cfg.name}: camera {door_cfg.camera!r} is not running (cameras: {', '.join(pipeline.states)})")
            if door_cfg.camera in self.doors:
                raise ConfigError(f"door {door_cfg.name}: camera {door_cfg.camera!r} already opens door {self.doors[door_cfg.camera].cfg.name}")
            self.doors[door_cfg.camera] = self._open_door(door_cfg, pipeline.gallery.threshold, now)
        self._install_rules(pipeline)
        if self.cfg.zmq.control:
            handlers = {"identify": self._identify, "enroll": self._enroll, "status": self._status, "reload": self._reload}
            self.control = ControlServer(self.ctx, self.cfg.zmq.control, handlers).start()
        self.thread.start()

    def _open_door(self, cfg: DoorConfig, threshold: float, now: float) -> Door:
        door = Door(cfg, DoorMachine(cfg, now), DoorRules(cfg, threshold, self.areas))
        outputs = {n: low for n, low in ((cfg.relay_line, cfg.relay_active_low), (cfg.wiegand_d0_line, True), (cfg.wiegand_d1_line, True)) if n >= 0}
        inputs = {cfg.contact_line: False} if cfg.contact_line >= 0 else {}
        if outputs or inputs:
            door.lines = self.open_lines(cfg.gpio_chip, outputs, inputs)
        if door.lines is not None and cfg.wiegand_d0_line >= 0:
            door.wiegand = WiegandOut(door.lines, cfg.wiegand_d0_line, cfg.wiegand_d1_line, cfg.wiegand_bits, cfg.wiegand_facility)
        if cfg.osdp:
            door.osdp = self.osdp_opener(cfg)
        return door

    def _install_rules(self, pipeline: Pipeline) -> None:
        for camera, state in pipeline.states.items():
            door = self.doors.get(camera)
            state.decider.rules = CameraRules(state.cam.groups, door.rules if door else None)

    def on_frame(self, state: CameraState, frame: Any, seconds: float) -> None:
        self.last_frame[state.cam.name] = time.monotonic()
        self.presence.update(state.cam.name, [(t.track_id, t.box) for t in state.tracker.tracks if t.confirmed])

    def on_decision(self, decision: Decision, samples: list[Sample]) -> None:
        request_id = self.presence.decided(decision, samples)
        card = None
        door = self.doors.get(decision.camera)
        if decision.decision == "grant" and door is not None and (door.wiegand or isinstance(door.osdp, OsdpReader)):
            # The card number is the gallery id; looked up here because the gallery is this thread's.
            record = self.pipeline.gallery.store.find(decision.person) if self.pipeline and decision.person else None
            card = record.id if record is not None else None
        events: list[DoorEvent] = []
        if decision.decision == "grant" and door is not None:
            # Only a grant ever reaches an output: a spoof, deny or unknown changes nothing.
            with door.lock:
                events = door.machine.grant(time.monotonic(), decision.person)
                self._drive(door)
        self.queue.put((decision, request_id, card, events))

    def on_tick(self) -> None:
        pipeline = self.pipeline
        if pipeline is not None and pipeline.cfg is not self.cfg:
            self._reconfigure(pipeline)
        while True:
            try:
                job, future = self.jobs.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except Exception as exc:  # noqa: BLE001 - handed to the waiting control thread, which answers with it
                    future.set_exception(exc)

    def _reconfigure(self, pipeline: Pipeline) -> None:
        """After a reload: new rules for the doors that still exist; their lines stay as wired."""
        self.cfg = pipeline.cfg
        for door_cfg in self.cfg.door:
            door = self.doors.get(door_cfg.camera)
            if door is not None and door.cfg.name == door_cfg.name:
                door.cfg = door_cfg
                door.machine.cfg = door_cfg
                door.rules = DoorRules(door_cfg, pipeline.gallery.threshold, self.areas)
        self._install_rules(pipeline)

    def on_stop(self, summary: RunSummary) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5.0)
        if self.control is not None:
            self.control.close()
        if self.publisher is not None:  # already closed by the outputs thread if it ran; twice is harmless
            self.publisher.close()
        for door in self.doors.values():
            if door.osdp is not None:
                door.osdp.close()
            if door.lines is not None:
                door.lines.close()
        self.ctx.term()

    # -- outputs thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    item = self.queue.get(timeout=TICK_S)
                except queue.Empty:
                    item = None
                if item is not None:
                    self._on_decision(*item)
                self._tick(time.monotonic())
        finally:
            for door in self.doors.values():  # stopping: every strike back to locked
                if door.lines is not None and door.cfg.relay_line >= 0:
                    door.lines.set(door.cfg.relay_line, False)
            if self.publisher is not None:
                self.publisher.close()

    def _on_decision(self, decision: Decision, request_id: str | None, card: int | None, events: list[DoorEvent]) -> None:
        door = self.doors.get(decision.camera)
        body = {**decision.to_dict(), "door": door.cfg.name if door else None, "request_id": request_id}
        if self.publisher is not None:
            self.publisher.publish("decision", body)
        if door is None or decision.decision != "grant":
            return
        self._publish(door, events)
        if card is not None and door.wiegand is not None:
            door.wiegand.send(card)
        if card is not None and isinstance(door.osdp, OsdpReader):
            door.osdp.card(frame(card, door.cfg.wiegand_facility, door.cfg.wiegand_bits))

    def _tick(self, now: float) -> None:
        for door in self.doors.values():
            events: list[DoorEvent] = []
            with door.lock:
                door.machine.frame(self.last_frame.get(door.cfg.camera, now))
                if door.lines is not None and door.cfg.contact_line >= 0:
                    events += door.machine.contact(door.lines.get(door.cfg.contact_line), now)
                events += door.machine.tick(now)
                self._drive(door)
            self._publish(door, events)
            if door.osdp is not None:
                for message in door.osdp.drain():
                    log.info("door %s: OSDP %s", door.cfg.name, message)

    def _drive(self, door: Door) -> None:
        """Relay (and OSDP output) to what the machine says; called with door.lock held."""
        released = door.machine.released
        if released != door.relay_on:
            door.relay_on = released
            if door.lines is not None and door.cfg.relay_line >= 0:
                door.lines.set(door.cfg.relay_line, released)
            if isinstance(door.osdp, OsdpPanel):
                door.osdp.unlock(door.cfg.open_time_s if door.machine.healthy else FAIL_SAFE_HOLD_S) if released else door.osdp.lock()

    def _publish(self, door: Door, events: list[DoorEvent]) -> None:
        for event in events:
            body = {**event.to_dict(), "ts": round(time.time(), 3)}
            door.last_events = (door.last_events + [body])[-10:]
            log.info("door %s: %s", door.cfg.name, event.event)
            if self.publisher is not None:
                self.publisher.publish("door", body)

    # -- control thread --------------------------------------------------------------------

    def _camera(self, request: dict[str, Any]) -> str:
        cameras = self.presence.cameras()
        camera = field_of(request, "camera", str, cameras[0] if len(cameras) == 1 else ...)
        if camera not in cameras:
            raise ApiError("unknown_camera", f"camera {camera!r}: one of {', '.join(cameras)}")
        return camera

    def _identify(self, request: dict[str, Any]) -> dict[str, Any]:
        camera = self._camera(request)
        wait_ms = field_of(request, "wait_ms", int, 0)
        view = self.presence.identify(camera, min(max(wait_ms, 0), MAX_IDENTIFY_WAIT_MS) / 1000.0)
        if view is None:
            return {"camera": camera, "status": "no_face"}
        if view.decision is None:
            return {"camera": camera, "status": "pending", "track_id": view.track_id}
        status = "unknown" if view.request_id else ("known" if view.decision["person"] else "unrecognised")
        out = {"camera": camera, "status": status, **view.decision}
        if view.request_id:
            out.update(request_id=view.request_id, expires_in_s=self.cfg.zmq.unknown_ttl_s)
        return out

    def _enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = field_of(request, "request_id", str)
        if field_of(request, "consent", bool, False) is not True:
            raise ApiError("consent_required", 'enroll needs "consent": true — the person agreed to be enrolled')
        held = self.presence.held(request_id)
        if held is None:
            raise ApiError("unknown_request", f"request_id {request_id!r} is unknown or expired")
        groups = field_of(request, "groups", list, [])
        try:
            profile = PersonProfile(
                name=field_of(request, "name", str), groups=tuple(groups), consent=True,
                consent_at=int(time.time()), consent_text=field_of(request, "consent_text", str, ""),
                retention_days=field_of(request, "retention_days", (int, type(None)), None),
                valid_until=field_of(request, "valid_until", (int, type(None)), None),
                created_by=f"kiosk:{request_id}",
            )
        except GalleryError as exc:
            raise ApiError("invalid_profile", str(exc)) from exc
        embeddings, qualities = self.presence.embeddings(held)

        def enroll() -> Any:
            gallery = self.pipeline.gallery  # type: ignore[union-attr]
            if gallery.store.find(profile.name) is not None:
                # Adding a stranger's face to an existing person would let them in as that person.
                raise ApiError("invalid_profile", f"a person named {profile.name!r} is already enrolled")
            record = gallery.enroll(profile, embeddings, qualities)
            if self.on_enrolled is not None:
                self.on_enrolled(record, request_id)
            return record

        future: Future[Any] = Future()
        self.jobs.put((enroll, future))
        try:
            record = future.result(ENROLL_TIMEOUT_S)
        except FutureTimeout as exc:
            future.cancel()
            raise ApiError("busy", "the inference loop did not take the enrollment in time; retry") from exc
        except GalleryError as exc:
            raise ApiError("invalid_profile", str(exc)) from exc
        self.presence.enrolled(request_id, record.profile.name)
        return {"person": record.profile.name, "templates": record.n_templates, "uid": record.uid}

    def _status(self, request: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.pipeline
        now = time.monotonic()
        cameras = {
            name: {"frames": state.frames, "last_frame_age_s": round(now - self.last_frame.get(name, now), 3)}
            for name, state in (pipeline.states.items() if pipeline else [])
        }
        doors = {
            d.cfg.name: {"camera": d.cfg.camera, "state": d.machine.state(), "healthy": d.machine.healthy,
                         "fail": d.cfg.fail, "last_events": list(d.last_events)}
            for d in self.doors.values()
        }
        people = len(pipeline.gallery) if pipeline else 0
        return {"cameras": cameras, "doors": doors, "people": people}

    def _reload(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.pipeline is None or self.pipeline.reloader is None:
            raise ApiError("busy", "this daemon cannot reload (no config file to re-read)")
        self.pipeline.reload_requested.set()
        return {"reloading": True}
