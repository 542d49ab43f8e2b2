"""The daemon behind `facegate run`: builds the parts in order, runs the frame loop, stops in reverse.

`Daemon(cfg, options).start()` runs the `start_*` steps — models, gallery, audit journal, the
pipeline, kiosk enrollment, door / ZeroMQ outputs, MQTT sync, systemd and metrics — each
registering how to stop what it started; `run()` turns the frame loop until a stop signal, the
end of the files or `--max-seconds`, then stops everything in reverse order (a part that fails
to stop is logged, the others still stop). A step that fails stops what was already started
and raises: a daemon that cannot drive its door or bind its socket does not run half-built.

Every decision goes through `_decided`: first the audit journal, then the observers that act
(doors, ZeroMQ, MQTT, printed lines). A decision whose audit record cannot be written is not
acted on — a door with `require_audit` (the default) does not open on a grant nobody can account
for, and raises an `audit_unavailable` alarm (edge/outputs/doors.py) — and is counted under
`audit` in `facegate_observer_errors_total` and in the journal's health (edge/audit/health.py);
informational observers (metrics, systemd) still see it. Observers' own errors are contained
(edge/video/observer.py).

SIGTERM / SIGINT stop cleanly (tracks in view get their decision); SIGHUP, the kiosk's `reload`
and an applied hub bundle re-read the config and reopen the gallery between two frames
(edge/reloader.py). A new config that fails (unreadable, invalid, models that do not load, a
gallery that does not open under it) is refused — logged, audited, counted — and the daemon
keeps running on the config it had, with the gallery reopened under that one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.audit.journal import AuditLog
from edge.config import CameraConfig, Config, check_door_cameras
from edge.errors import AuditError, ConfigError
from edge.events import ChallengeEvent, DecisionEvent
from edge.gallery.loader import open_gallery
from edge.gallery.records import PersonRecord
from edge.gallery.retention_policy import RetentionPolicy
from edge.perception.faces import Perception
from edge.perception.liveness.checker import load_liveness
from edge.reloader import Reloader
from edge.video.observer import Observer
from edge.video.retention_sweep import RetentionSweep

if TYPE_CHECKING:
    from edge.gallery.probes import ProbeKeeper
    from edge.outputs.card_readers import EdgeOpener
    from edge.outputs.gpio import LineOpener
from edge.video.pipeline import Pipeline, RunSummary

_LOG = logging.getLogger("facegate")


@dataclass(frozen=True)
class RunOptions:
    cameras: list[CameraConfig]
    data_dir: Path | None = None  # None: [gallery] data_dir and its defaults
    realtime: bool = False
    annotate: Path | None = None
    # Re-reads the config file on reload; None: keep the config, reopen the gallery only.
    reload_config: Callable[[], Config] | None = None
    observers: tuple[Observer, ...] = field(default=())  # the CLI's printed lines, tests' probes
    warn: Callable[[str], None] = _LOG.warning
    gpio: LineOpener | None = None  # opens a door's GPIO lines; None: libgpiod (tests pass an in-memory chip)
    card_edges: EdgeOpener | None = None  # opens a Wiegand card reader's input lines; None: libgpiod
    clock: Callable[[], float] = time.time  # the wall clock retention deadlines are compared with (tests pass theirs)


class _SyncEvents(Observer):
    """Each decision and step-up challenge, live, on MQTT (QoS 0): the durable copy is the audit record."""

    name = "sync"

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def on_decision(self, event: DecisionEvent) -> None:
        self.agent.publish_event(event.body)

    def on_challenge(self, event: ChallengeEvent) -> None:
        self.agent.publish_event(event.body, kind="challenge")


class _KeepProbes(Observer):
    """Named decisions' probes to the ProbeKeeper (kept sealed for `gallery reject-match`); and,
    about once a second, negative templates added or cleared by another process picked up."""

    name = "probes"
    REFRESH_S = 1.0

    def __init__(self, keeper: ProbeKeeper | None) -> None:
        self.keeper = keeper  # None: [match] keep_probes_h = 0
        self.pipeline: Pipeline | None = None
        self._next = 0.0

    def on_start(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def on_decision(self, event: DecisionEvent) -> None:
        if self.keeper is not None and self.pipeline is not None and event.probe is not None and event.person_id is not None:
            self.keeper.keep(event.event_id, event.person_id, event.probe, self.pipeline.gallery.model)

    def on_tick(self) -> None:
        now = time.monotonic()
        if self.pipeline is None or now < self._next:
            return
        self._next = now + self.REFRESH_S
        if self.pipeline.gallery.refresh_negatives():
            _LOG.info("negative templates reloaded (%d)", len(self.pipeline.gallery.negatives))


class Daemon:
    def __init__(self, cfg: Config, options: RunOptions, perception: Perception | None = None) -> None:
        self.cfg = cfg
        self.options = options
        self.perception = perception
        self.liveness: Any | None = None
        self.journal: AuditLog | None = None
        self.pipeline: Pipeline | None = None
        self.doors: Any | None = None
        self.retention: RetentionSweep | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self._stopped = False

    # -- start ---------------------------------------------------------------------------

    def start(self) -> Daemon:
        try:
            self.start_models()
            self.start_audit()
            self.start_pipeline()
            self.start_outputs()
            self.start_probes()  # after the doors: a relay acts before a probe is queued
            self.start_sync()
            self.start_service()
            assert self.pipeline is not None
            self.pipeline.observers.add(*self.options.observers)  # after the doors: the relay comes first
        except BaseException:
            self.stop()
            raise
        return self

    def _on_stop(self, what: str, stop: Callable[[], None]) -> None:
        self._stops.append((what, stop))

    def start_models(self) -> None:
        problems = check_door_cameras(self.cfg.door, [c.name for c in self.options.cameras])
        if problems:  # before any model loads: a door on a camera that is not running is a config mistake
            raise ConfigError.listing(problems)
        if self.perception is None:
            self.perception = Perception(self.cfg)
        self.liveness = load_liveness(self.cfg, self.perception.store)

    def start_audit(self) -> None:
        self.journal = AuditLog.open(self._data_dir())
        self._on_stop("audit journal", self.journal.close)

    def start_pipeline(self) -> None:
        assert self.perception is not None and self.journal is not None
        gallery = open_gallery(self.options.data_dir, self.cfg, self.perception.store, create=False, warn=self.options.warn)
        pipeline = self.pipeline = Pipeline(
            self.cfg, gallery, self.options.cameras, realtime=self.options.realtime, perception=self.perception,
            liveness=self.liveness, annotate=self.options.annotate,
        )
        self._on_stop("gallery", lambda: pipeline.gallery.close())
        pipeline.reloader = Reloader(pipeline, self.journal, self.options.reload_config, self.options.data_dir, self._applied, self.options.warn)
        pipeline.on_decision = self._decided
        self.retention = RetentionSweep(lambda: RetentionPolicy.of(self.cfg.privacy), lambda: self.cfg.privacy.retention_sweep_s,
                                        self.journal.append, clock=self.options.clock)
        pipeline.observers.add(self.retention)  # sweeps when the pipeline starts, then every retention_sweep_s

    def start_probes(self) -> None:
        """Keeps each grant's / deny's probe, sealed, for `[match] keep_probes_h` (off: 0, and
        whatever was kept is dropped), so a wrong match can be rejected (`gallery reject-match`)."""
        from edge.gallery import negatives

        pipeline, match = self.pipeline, self.cfg.match
        assert pipeline is not None
        keeper = None
        if match.keep_probes_h <= 0:
            negatives.prune_probes(pipeline.gallery.store, 0.0, 0)
        else:
            from edge.gallery.keys import load_key
            from edge.gallery.probes import ProbeKeeper
            from edge.gallery.store import GalleryStore

            data_dir = self._data_dir()
            kek = load_key(data_dir, self.cfg, create=False).kek
            keeper = ProbeKeeper(lambda: GalleryStore.open(data_dir, kek), match.keep_probes_h, match.keep_probes_max).start()
            self._on_stop("probe keeper", keeper.close)
        pipeline.observers.add(_KeepProbes(keeper))

    def start_outputs(self) -> None:
        """Door relays / Wiegand / OSDP and the ZeroMQ PUB socket; the kiosk's control socket."""
        cfg, pipeline = self.cfg, self.pipeline
        assert pipeline is not None
        if not (cfg.door or cfg.zmq.events or cfg.zmq.control):
            return
        import zmq  # ZeroMQ, GPIO and OSDP only when configured

        from edge.outputs.doors import DoorOutputs
        from edge.outputs.zmq_auth import start_authenticator

        ctx = zmq.Context()
        self._on_stop("zmq context", ctx.term)
        # Before any socket binds: a CURVE socket without its ZAP handler would let every key in.
        auth = start_authenticator(ctx, cfg.zmq)
        if auth is not None:
            self._on_stop("zmq authenticator", auth.stop)
        if cfg.door or cfg.zmq.events:
            openers = {"open_lines": self.options.gpio, "open_edges": self.options.card_edges}
            assert self.journal is not None
            self.doors = DoorOutputs(cfg, ctx, **{k: v for k, v in openers.items() if v is not None}, audit=self.journal.append,
                                     audit_health=self.journal.health)
            self._on_stop("door outputs", self.doors.close)
            pipeline.observers.add(self.doors)
        if cfg.zmq.control:
            self._start_kiosk(ctx)

    def _start_kiosk(self, ctx: Any) -> None:
        from edge.gallery.enrollment import EnrollmentService
        from edge.gallery.withdrawal import erase_withdrawn
        from edge.outputs.kiosk import SLOW_OPS, Kiosk, Presence
        from edge.outputs.withdraw import Withdrawals
        from edge.outputs.zmq_api import ControlServer

        pipeline, journal = self.pipeline, self.journal
        assert pipeline is not None and journal is not None
        enrollment = EnrollmentService(self.cfg.zmq.unknown_ttl_s, lambda: pipeline.gallery, self._audit_enrollment)
        pipeline.hold_unknown = enrollment.hold
        presence = Presence()  # consent withdrawal: the erasure runs on the inference thread (Kiosk.on_tick)
        # The control socket answers from here on, before the cameras' first frame: a kiosk that
        # asks right after "ready" must get "no face yet", not "unknown camera".
        for camera in self.options.cameras:
            presence.add_camera(camera.name)
        withdrawals = Withdrawals(presence, lambda pid, uid: erase_withdrawn(pipeline.gallery, pid, uid), journal.append, lambda: self.cfg.zmq,
                                  lambda: pipeline.gallery.verify_threshold)
        kiosk = Kiosk(enrollment, self.status, self.request_reload, self.cfg.zmq.unknown_ttl_s, policy=lambda: self.cfg.zmq,
                      presence=presence, withdrawals=withdrawals)
        pipeline.observers.add(kiosk)
        control = ControlServer(ctx, self.cfg.zmq, kiosk.handlers(), slow=SLOW_OPS).start()
        self._on_stop("control socket", control.close)

    def start_sync(self) -> None:
        if not self.cfg.sync.broker_host:
            return
        from edge.gallery.keys import load_key
        from edge.gallery.store import GalleryStore
        from sync.agent import SyncAgent

        pipeline, data_dir = self.pipeline, self._data_dir()
        assert pipeline is not None and self.journal is not None
        kek = load_key(data_dir, self.cfg, create=False).kek
        # A bundle applied by the agent (on its own thread and SQLite connection) is picked up
        # like a SIGHUP: the inference thread reopens the gallery between two frames.
        agent = SyncAgent(
            self.cfg, lambda: GalleryStore.open(data_dir, kek), self.journal, on_gallery_update=lambda _v: pipeline.reload_requested.set()
        )
        agent.start()
        self._on_stop("sync agent", agent.stop)
        pipeline.observers.add(_SyncEvents(agent))

    def start_service(self) -> None:
        """sd_notify + watchdog and journald fields; /metrics and health when `[metrics] enabled`."""
        from edge.service.systemd import ServiceObserver, setup_logging

        pipeline = self.pipeline
        assert pipeline is not None
        pipeline.observers.add(ServiceObserver(journal=setup_logging() == "journal"))
        if self.cfg.metrics.enabled:
            from edge.service.metrics import MetricsObserver

            metrics = MetricsObserver.serve(self.cfg, self._data_dir(), self.journal.health if self.journal else None,
                                            self.retention.erased if self.retention else None)
            if metrics.server is not None:
                self._on_stop("metrics server", metrics.server.stop)
            pipeline.observers.add(metrics)

    # -- run and stop --------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> RunSummary:
        """The frame loop, with the signals installed (main thread only); stops everything after."""
        pipeline, journal = self.pipeline, self.journal
        assert pipeline is not None and journal is not None
        if threading.current_thread() is threading.main_thread():
            handlers = {
                signal.SIGTERM: lambda *_: pipeline.stop_event.set(),
                signal.SIGINT: lambda *_: pipeline.stop_event.set(),
                signal.SIGHUP: lambda *_: pipeline.reload_requested.set(),
            }
            for signum, handler in handlers.items():
                previous = signal.signal(signum, handler)
                self._on_stop(f"signal {signum.name}", lambda s=signum, p=previous: signal.signal(s, p))
        self._record("start", {"cameras": [c.name for c in pipeline.cameras], "persons": len(pipeline.gallery), "models": pipeline.models})
        try:
            summary = pipeline.run(max_seconds)
            self._record("stop", {"frames": summary.frames, "decisions": summary.decisions})
            return summary
        finally:
            self.stop()

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        """A start or stop record. A full disk must not keep the daemon from running (its doors
        would be left undriven) nor fail its stop: logged, and the journal's health raises the alarm."""
        assert self.journal is not None
        try:
            self.journal.append(kind, body)
        except AuditError as exc:
            _LOG.error("%s record not audited: %s", kind, exc)

    def stop(self) -> None:
        """Stops what was started, newest first; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        while self._stops:
            what, stop = self._stops.pop()
            try:
                stop()
            except Exception:  # noqa: BLE001 - the other parts must still stop
                _LOG.exception("stopping the %s failed", what)

    # -- the decision path (inference thread) ------------------------------------------------

    def _decided(self, event: DecisionEvent) -> None:
        """Audit, then act."""
        pipeline, journal = self.pipeline, self.journal
        assert pipeline is not None and journal is not None
        try:
            journal.append("decision", event.audit_body())
            audited = True
        except Exception as exc:  # noqa: BLE001 - a full disk must not end the run; nothing acts on this decision
            audited = False
            pipeline.observers.errors["audit"] += 1
            _LOG.error("decision %s on %s track %d not audited (%s): not acted on", event.decision, event.camera, event.track_id, exc)
        pipeline.observers.decision(event, audited)

    def _audit_enrollment(self, record: PersonRecord, request_id: str) -> None:
        assert self.journal is not None
        self.journal.append("enroll", {"person_uid": record.uid, "templates": record.n_templates, "by": f"kiosk:{request_id}"})

    def _applied(self, cfg: Config) -> None:
        self.cfg = cfg  # what the kiosk's policy, status and later steps read

    # -- for the kiosk's control thread ---------------------------------------------------

    def request_reload(self) -> bool:
        if self.pipeline is None:
            return False
        self.pipeline.reload_requested.set()
        return True

    def status(self) -> dict[str, Any]:
        pipeline, now = self.pipeline, time.monotonic()
        cameras = {
            name: {"frames": state.frames, "last_frame_age_s": round(now - (state.last_frame_mono or now), 3)}
            for name, state in (pipeline.states.items() if pipeline else [])
        }
        doors = self.doors.status() if self.doors is not None else {}
        return {"cameras": cameras, "doors": doors, "people": len(pipeline.gallery) if pipeline else 0}

    def _data_dir(self) -> Path:
        from edge.gallery.keys import data_dir_for

        return data_dir_for(self.options.data_dir, self.cfg)
