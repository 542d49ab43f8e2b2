"""Decision events → door state → relay, Wiegand, OSDP; and every event on the ZeroMQ PUB socket.

`DoorOutputs` is a pipeline observer that acts on `DecisionEvent`s only: the access rules were
applied when the track was decided (edge/video/decide.py), so a grant here is final, and its
card number travels in the event. On the inference thread it only drives a grant's relay and
queues; the outputs thread drives the doors — relock timers, contacts, health, relays, Wiegand
pulses, OSDP — and owns the event socket, so a slow output or a wedged inference loop never
stalls the other. The doors' lines and ports are opened when it is built: a door that cannot be
driven refuses the start. A grant the audit journal could not take arrives in `on_unaudited`:
a door with `require_audit` stays locked and raises `audit_unavailable` (docs/door.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from edge.access.door_state import DoorEvent, DoorMachine
from edge.audit.health import AuditHealth
from edge.config import Config, DoorConfig
from edge.errors import ConfigError
from edge.events import ChallengeEvent, DecisionEvent
from edge.outputs.card_readers import EdgeLines, EdgeOpener, WiegandReader, open_gpiod_edges, osdp_credential
from edge.outputs.gpio import LineOpener, Lines, open_gpiod
from edge.outputs.osdp import OsdpPanel, OsdpReader, open_osdp
from edge.outputs.wiegand import WiegandOut, frame
from edge.outputs.zmq_api import EventPublisher
from edge.video.observer import Observer

if TYPE_CHECKING:
    from edge.video.pipeline import CameraState, Pipeline, RunSummary

log = logging.getLogger(__name__)

TICK_S = 0.02  # outputs thread: relock timers, contacts and health are checked this often
FAIL_SAFE_HOLD_S = 6553.5  # longest OSDP output timer: a fail-safe release lasts until health returns
DOOR_EVENT = "door_event"  # audit kind of door events
AuditAppend = Callable[[str, dict[str, Any]], Any]  # AuditLog.append


@dataclass(slots=True)
class Door:
    cfg: DoorConfig
    machine: DoorMachine
    lines: Lines | None = None
    wiegand: WiegandOut | None = None
    osdp: OsdpReader | OsdpPanel | None = None
    card_lines: EdgeLines | None = None  # a Wiegand card reader's inputs (edge/outputs/card_readers.py)
    reader: WiegandReader | None = None  # ... and its thread, started with the outputs
    card_errors: Counter[str] = field(default_factory=Counter)  # OSDP card reads refused
    relay_on: bool = False
    last_events: list[dict[str, Any]] = field(default_factory=list)
    # The machine and the relay are driven from two threads: a grant straight from the
    # inference thread (no hand-over on the latency path), timers from the outputs thread.
    lock: threading.Lock = field(default_factory=threading.Lock)


class DoorOutputs(Observer):
    name = "doors"

    def __init__(self, cfg: Config, ctx: zmq.Context[Any], open_lines: LineOpener = open_gpiod,
                 osdp_opener: Callable[[DoorConfig], OsdpReader | OsdpPanel] = open_osdp,
                 open_edges: EdgeOpener = open_gpiod_edges, audit: AuditAppend | None = None,
                 audit_health: AuditHealth | None = None) -> None:
        self.cfg = cfg
        self.audit = audit
        self.audit_errors = 0  # door events the journal could not take (logged; the door keeps working)
        self.audit_health = audit_health  # the journal's (edge/audit/health.py): counts the grants refused
        self._alarmed: dict[str, int] = {}  # door name -> unaudited grants since its audit_unavailable alarm
        self._unaudited = False  # on_decision called by on_unaudited: the outage is not over
        self.open_edges = open_edges
        self.osdp_opener = osdp_opener
        self.open_lines = open_lines
        self.doors: dict[str, Door] = {}  # by camera
        self.last_frame: dict[str, float] = {}
        # (event, door events, acted on); a step-up challenge rides the same queue, so it goes out
        # before the decision that follows it.
        self.queue: queue.Queue[tuple[DecisionEvent | ChallengeEvent, list[DoorEvent], bool]] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="door-outputs", daemon=True)
        self.pipeline: Pipeline | None = None
        now = time.monotonic()
        try:
            for door_cfg in cfg.door:
                if door_cfg.camera in self.doors:  # config load refuses this too; the doors must never share a camera
                    raise ConfigError(f"door {door_cfg.name}: camera {door_cfg.camera!r} already opens door {self.doors[door_cfg.camera].cfg.name}")
                self.doors[door_cfg.camera] = self._open_door(door_cfg, now)
            # Bound now, before the cameras open: a taken endpoint fails at start, and subscribers
            # have time to join before the first decision (PUB drops what nobody subscribed to yet).
            self.publisher = EventPublisher(ctx, cfg.zmq) if cfg.zmq.events else None
        except BaseException:
            self._close_doors()
            raise

    def _open_door(self, cfg: DoorConfig, now: float) -> Door:
        door = Door(cfg, DoorMachine(cfg, now))
        outputs = {n: low for n, low in ((cfg.relay_line, cfg.relay_active_low), (cfg.wiegand_d0_line, True), (cfg.wiegand_d1_line, True)) if n >= 0}
        inputs = {cfg.contact_line: False} if cfg.contact_line >= 0 else {}
        if outputs or inputs:
            door.lines = self.open_lines(cfg.gpio_chip, outputs, inputs)
        if door.lines is not None and cfg.wiegand_d0_line >= 0:
            door.wiegand = WiegandOut(door.lines, cfg.wiegand_d0_line, cfg.wiegand_d1_line, cfg.wiegand_bits, cfg.wiegand_facility)
        if cfg.osdp:
            door.osdp = self.osdp_opener(cfg)
        if cfg.wiegand_in_d0 >= 0:
            door.card_lines = self.open_edges(cfg.wiegand_in_chip, {cfg.wiegand_in_d0: True, cfg.wiegand_in_d1: True})
        return door

    # -- inference thread ------------------------------------------------------------------

    def on_start(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        now = time.monotonic()
        for camera in pipeline.states:
            self.last_frame[camera] = now
        missing = [d.cfg.name for camera, d in self.doors.items() if camera not in pipeline.states]
        if missing:
            raise ConfigError(f"door {', '.join(missing)}: camera not running (cameras: {', '.join(pipeline.states)})")
        for door in self.doors.values():
            credentials = pipeline.credentials.get(door.cfg.name)
            if door.card_lines is not None and credentials is not None:
                door.reader = WiegandReader(door.cfg.name, door.card_lines, door.cfg.wiegand_in_d0, door.cfg.wiegand_in_d1, credentials).start()
        self.thread.start()

    def on_frame(self, state: CameraState, frame: Any, seconds: float) -> None:
        self.last_frame[state.cam.name] = time.monotonic()

    def on_decision(self, event: DecisionEvent) -> None:
        events: list[DoorEvent] = []
        door = self.doors.get(event.camera)
        if door is not None and door.cfg.name in self._alarmed and not self._unaudited:
            # This decision was journalled: the door's audit alarm is over.
            grants = self._alarmed.pop(door.cfg.name)
            events.append(DoorEvent(door.cfg.name, "audit_restored", time.monotonic(), {"unaudited_grants": grants}))
        if event.decision == "grant" and door is not None:
            # Only a grant ever reaches an output: a spoof, deny or unknown changes nothing.
            with door.lock:
                events += door.machine.grant(time.monotonic(), event.person_out())
                self._drive(door)
        self.queue.put((event, events, True))

    def on_challenge(self, event: ChallengeEvent) -> None:
        self.queue.put((event, [], True))

    def on_unaudited(self, event: DecisionEvent) -> None:
        """A grant the journal could not take (a full disk). With `require_audit` (the default)
        the door stays locked: no durable record, no unlock. Either way an `audit_unavailable`
        door event goes out (log, ZeroMQ, `status`, and the journal should it take it again);
        the door's first journalled decision after the outage is `audit_restored`."""
        door = self.doors.get(event.camera)
        if door is None or event.decision != "grant":
            return
        name, opened = door.cfg.name, not door.cfg.require_audit
        self._alarmed[name] = self._alarmed.get(name, 0) + 1
        alarm = DoorEvent(name, "audit_unavailable", time.monotonic(), {"grant": "opened" if opened else "refused"})
        if opened:
            log.error("door %s: grant %s not audited; opened anyway (require_audit = false)", name, event.event_id)
            self._unaudited = True
            try:
                self.on_decision(event)
            finally:
                self._unaudited = False
            self.queue.put((event, [alarm], False))
            return
        log.error("door %s: grant %s not audited; the door stays locked (require_audit)", name, event.event_id)
        if self.audit_health is not None:
            self.audit_health.refused(name)
        self.queue.put((event, [alarm], False))

    def on_tick(self) -> None:
        pipeline = self.pipeline
        if pipeline is not None and pipeline.cfg is not self.cfg:
            self._reconfigure(pipeline.cfg)

    def _reconfigure(self, cfg: Config) -> None:
        """After a reload: the doors that still exist take their new settings; their lines stay as wired."""
        self.cfg = cfg
        for door_cfg in cfg.door:
            door = self.doors.get(door_cfg.camera)
            if door is not None and door.cfg.name == door_cfg.name:
                door.cfg = door_cfg
                door.machine.cfg = door_cfg

    def on_stop(self, summary: RunSummary) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5.0)
        if self.publisher is not None:  # already closed by the outputs thread if it ran; twice is harmless
            self.publisher.close()
        self._close_doors()

    def _close_doors(self) -> None:
        for door in self.doors.values():
            if door.osdp is not None:
                door.osdp.close()
            if door.reader is not None:
                door.reader.close()  # closes its lines too
            elif door.card_lines is not None:
                door.card_lines.close()
            if door.lines is not None:
                door.lines.close()

    def status(self) -> dict[str, dict[str, Any]]:
        """Each door's state for the kiosk's `status` request (any thread)."""
        return {
            d.cfg.name: {"camera": d.cfg.camera, "state": d.machine.state(), "healthy": d.machine.healthy,
                         "fail": d.cfg.fail, "last_events": list(d.last_events)}
            for d in self.doors.values()
        }

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

    def _on_decision(self, event: DecisionEvent | ChallengeEvent, events: list[DoorEvent], acted: bool) -> None:
        if isinstance(event, ChallengeEvent):
            if self.publisher is not None:
                self.publisher.publish("challenge", event.body)
            return
        door = self.doors.get(event.camera)
        if not acted:  # only the door's alarm goes out: nothing acts on an unaudited decision
            if door is not None:
                self._publish(door, events, event)
            return
        if self.publisher is not None:
            self.publisher.publish("decision", event.body)
        if door is not None:
            self._publish(door, events, event)  # a grant's unlock; audit_restored after any decision
        if door is None or event.decision != "grant":
            return
        card = event.card
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
                self._osdp_events(door)

    def _osdp_events(self, door: Door) -> None:
        """What the PD reported: card reads and keys go to the door's credentials (never to the log)."""
        assert door.osdp is not None
        credentials = self.pipeline.credentials.get(door.cfg.name) if self.pipeline is not None else None
        for message in door.osdp.drain():
            if credentials is None or not osdp_credential(message, credentials, door.card_errors):
                log.info("door %s: OSDP %s", door.cfg.name, {k: v for k, v in message.items() if k != "data"})

    def _drive(self, door: Door) -> None:
        """Relay (and OSDP output) to what the machine says; called with door.lock held."""
        released = door.machine.released
        if released != door.relay_on:
            door.relay_on = released
            if door.lines is not None and door.cfg.relay_line >= 0:
                door.lines.set(door.cfg.relay_line, released)
            if isinstance(door.osdp, OsdpPanel):
                door.osdp.unlock(door.cfg.open_time_s if door.machine.healthy else FAIL_SAFE_HOLD_S) if released else door.osdp.lock()

    def _publish(self, door: Door, events: list[DoorEvent], decision: DecisionEvent | None = None) -> None:
        for event in events:
            body = {**event.to_dict(), "ts": round(time.time(), 3)}
            door.last_events = (door.last_events + [body])[-10:]
            log.info("door %s: %s", door.cfg.name, event.event)
            self._audit(event, decision)
            if self.publisher is not None:
                self.publisher.publish("door", body)

    def _audit(self, event: DoorEvent, decision: DecisionEvent | None) -> None:
        """Every door event is an audit record (`door_event`): a forced door, a door held open,
        a fail-safe release or a blind camera is part of the tamper-evident trail, not only a log
        line. The record names the person by uid and links the grant's decision record by its
        event id; no name goes into the journal from here."""
        if self.audit is None:
            return
        body: dict[str, Any] = {"door": event.door, "event": event.event, **{k: v for k, v in event.detail.items() if k != "person"}}
        if decision is not None:
            body["decision_event_id"] = decision.event_id
            if decision.person_uid:
                body["person_uid"] = decision.person_uid
        try:
            self.audit(DOOR_EVENT, body)
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop the relay timers
            self.audit_errors += 1
            log.error("door %s: %s not audited (%s)", event.door, event.event, exc)
