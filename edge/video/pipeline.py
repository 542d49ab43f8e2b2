"""The daemon's main loop: frames from every camera → detect → track → describe → decide.

One process, one inference thread (this one) and one capture thread per camera. Per frame:
detect (every `[track] detect_every` frames, else predict), update the tracker, then spend
landmarks + embedding only on tracks that are still undecided (at most
`[decide] max_tracks_per_frame`, largest faces first) — a decided face costs only its share of
detection, which is what keeps a Pi-class CPU real-time with several people in view.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.access.credentials import Credentials, DoorCredentials
from edge.access.rules import AreaRegister, CameraRules, DoorRules
from edge.config import CameraConfig, Config
from edge.events import ChallengeEvent, DecisionEvent
from edge.gallery.records import PersonProfile
from edge.gallery.retention import refusal as retention_refusal
from edge.gallery.retention_policy import RetentionPolicy
from edge.gallery.search import Gallery
from edge.perception.detect import Detection
from edge.perception.faces import TIMING_WINDOW, Face, Perception
from edge.perception.landmarks import FaceMesh, mesh_keypoints
from edge.video.annotate import Annotator
from edge.video.capture import CameraReader, Frame
from edge.video.decide import Decider, HoldUnknown
from edge.video.observer import Observers
from edge.video.track import Box, SceneCut, Track, Tracker

# How long one camera's get() may block when several cameras share the loop.
MULTI_CAMERA_POLL_S = 0.01
# Sections whose change needs the models reloaded on SIGHUP (others apply in place).
_PERCEPTION_SECTIONS = ("models", "detect", "align", "embed", "quality")


@dataclass(slots=True)
class CameraState:
    cam: CameraConfig
    reader: CameraReader
    tracker: Tracker
    decider: Decider
    scene_cut: SceneCut
    frames: int = 0
    last_frame_mono: float = 0.0  # when the loop last processed a frame of this camera
    labels: dict[int, DecisionEvent] = field(default_factory=dict)  # decided tracks, for annotation
    challenges: dict[int, ChallengeEvent] = field(default_factory=dict)  # tracks asked for a step-up challenge
    meshes: dict[int, tuple[FaceMesh, Box]] = field(default_factory=dict)  # last mesh per undecided track


@dataclass(frozen=True, slots=True)
class RunSummary:
    frames: int
    seconds: float
    faces: int
    decisions: dict[str, int]
    latency_ms: list[float]
    usable_latency_ms: list[float]  # from the first gate-passing frame (tracks that had one)
    face_latency_ms: list[float]  # from the first FaceMesh-confirmed frame (tracks that had one)
    stages_ms: dict[str, float]  # mean per call over the last TIMING_WINDOW calls
    cameras: dict[str, dict[str, object]]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "faces": self.faces,
            "decisions": self.decisions,
            "decision_latency_ms_p50": _percentile(self.latency_ms, 50),
            "decision_latency_ms_p95": _percentile(self.latency_ms, 95),
            "usable_latency_ms_p50": _percentile(self.usable_latency_ms, 50),
            "usable_latency_ms_p95": _percentile(self.usable_latency_ms, 95),
            "face_latency_ms_p50": _percentile(self.face_latency_ms, 50),
            "face_latency_ms_p95": _percentile(self.face_latency_ms, 95),
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "cameras": self.cameras,
        }


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


@dataclass(frozen=True, slots=True)
class Reloaded:
    """A reload built to the end before anything switches over (`Pipeline.prepare_reload`): a
    failure half-way leaves the running config, models and gallery whole."""

    cfg: Config
    gallery: Gallery
    perception: Perception  # the running one when no perception section changed
    rules: dict[str, CameraRules]


def perception_changed(old: Config, new: Config) -> bool:
    """True when `new` needs the models loaded again (other sections apply in place)."""
    return any(getattr(new, s) != getattr(old, s) for s in _PERCEPTION_SECTIONS)


def model_versions(perception: Perception) -> dict[str, str]:
    out = {}
    for role, name in perception.model_names.items():
        record = perception.store.records.get(name)
        out[role] = f"{name}@{record.version}" if record is not None else name
    return out


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        gallery: Gallery,
        cameras: list[CameraConfig],
        realtime: bool = False,
        perception: Perception | None = None,
        liveness: Any | None = None,
        annotate: Path | None = None,
        hold_unknown: HoldUnknown | None = None,
    ) -> None:
        self.cfg = cfg
        self.gallery = gallery
        self.realtime = realtime
        self.perception = perception or Perception(cfg)
        self.liveness = liveness
        self.models = model_versions(self.perception)
        self.cameras = cameras
        self.states: dict[str, CameraState] = {}
        self.annotator = Annotator(annotate, [c.name for c in cameras]) if annotate else None
        self.timings_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=TIMING_WINDOW))
        self.timing_counts: Counter[str] = Counter()
        self.decisions: deque[DecisionEvent] = deque(maxlen=TIMING_WINDOW)  # the latest, for the summary
        self.counts: Counter[str] = Counter()
        self.faces = 0
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        # SIGHUP / sync: a new config and gallery, or None to keep running on the current ones.
        self.reloader: Callable[[], Reloaded | None] | None = None
        self.reload_failures = 0  # new configs the reloader refused (facegate_config_reload_failures_total)
        self.observers = Observers()
        # Where each decision goes; the daemon puts its audit-then-act step here.
        self.on_decision: Callable[[DecisionEvent], None] = self.observers.decision
        # A track asked for a step-up challenge (edge/video/challenge.py): not a decision, not audited.
        self.on_challenge: Callable[[ChallengeEvent], None] = self.observers.challenge
        self.hold_unknown = hold_unknown
        self.areas = AreaRegister()  # anti-passback: shared by every door, kept across reloads
        self.rules = self._rules(cfg, gallery)
        # Cards and PINs from the doors' readers (edge/outputs/card_readers.py) to the deciders.
        self.credentials = Credentials(cfg.door)

    # -- per frame ---------------------------------------------------------------------------

    def _rules(self, cfg: Config, gallery: Gallery) -> dict[str, CameraRules]:
        """Each camera's access rules: its groups, and its door's rules when a [[door]] uses it."""
        doors = {d.camera: DoorRules(d, gallery.threshold, self.areas) for d in cfg.door}
        policy = RetentionPolicy.of(cfg.privacy)

        def retention(person_id: int, profile: PersonProfile, now: float) -> str | None:
            return retention_refusal(gallery.store, person_id, profile, policy, now)

        return {cam.name: CameraRules(cam.groups, doors.get(cam.name), retention) for cam in self.cameras}

    def prepare_reload(self, cfg: Config, gallery: Gallery, perception: Perception | None) -> Reloaded:
        """Everything of a reload that can fail (the doors' schedules parse here), touching
        nothing that runs; `perception` None: keep the running models."""
        rules = self._rules(cfg, gallery)
        if any(d.mode != "face" for d in cfg.door):
            gallery.credentials()  # the card map decrypts every record: a bad one refuses here, not mid-swap
        return Reloaded(cfg, gallery, perception or self.perception, rules)

    @property
    def target_fmr(self) -> float | None:
        """The per-comparison false-match rate the threshold came from; None for an explicit one."""
        return None if self.cfg.match.threshold else self.cfg.match.target_fmr

    def _state(self, cam: CameraConfig, reader: CameraReader) -> CameraState:
        decider = Decider(
            self.cfg.decide, cam, self.gallery, self.models, self.liveness, self.rules[cam.name], self.target_fmr, self.hold_unknown,
            self._credentials_of(cam.name), show_names=self.cfg.privacy.show_names,
        )
        return CameraState(cam, reader, Tracker(self.cfg.track), decider, SceneCut(self.cfg.track.scene_cut))

    def process(self, state: CameraState, frame: Frame) -> list[DecisionEvent]:
        image, t = frame.image, frame.t
        p = self.perception
        ended: list[Track] = []
        if state.scene_cut(image):
            ended += state.tracker.reset()
        if state.frames % self.cfg.track.detect_every == 0:
            detections = p.detect(image, refine=False)
            self.faces += len(detections)
            started = time.perf_counter()
            ended += state.tracker.update(detections, t, frame.mono, frame.ts)
        else:
            started = time.perf_counter()
            ended += state.tracker.predict(t)
        self._time("track", started)
        state.frames += 1
        decisions = [self._decide(state, tr) for tr in ended if tr.confirmed and state.decider.wants(tr)]
        for tr in ended:
            state.decider.forget(tr)
            state.labels.pop(tr.track_id, None)
            state.challenges.pop(tr.track_id, None)
            state.meshes.pop(tr.track_id, None)

        # Undecided tracks with a detection this frame, or (between detector runs) with a mesh
        # to follow.
        pending = [
            tr for tr in state.tracker.tracks
            if state.decider.wants(tr) and (tr.detection is not None or tr.track_id in state.meshes)
        ]
        pending.sort(key=lambda tr: (tr.box[2] - tr.box[0]) * (tr.box[3] - tr.box[1]), reverse=True)
        pending = pending[: self.cfg.decide.max_tracks_per_frame]
        described = [(tr, self._describe(state, image, tr, t)) for tr in pending]
        pending = [tr for tr, face in described if face is not None]
        faces = p.embed([face for _, face in described if face is not None])
        started = time.perf_counter()
        for tr, face in zip(pending, faces, strict=True):
            state.decider.observe(tr, face, image, t, frame.mono)
        self._time("liveness", started)
        for tr in [tr for tr in state.tracker.tracks if state.decider.due(tr, t)]:
            asked = state.decider.step_up(tr, t)
            if asked is None:
                decisions.append(self._decide(state, tr))
            else:
                state.challenges[tr.track_id] = asked
                self.on_challenge(asked)
        if self.annotator is not None:
            self.annotator.write(frame, state.tracker.tracks, state.labels, state.reader.fps or 15.0, state.challenges)
        return decisions

    def _describe(self, state: CameraState, image: np.ndarray, track: Track, t: float) -> Face | None:
        """Landmarks from the track's last mesh when there is one (one FaceMesh run), else from
        the zoomed re-detection of its box (two or three model runs). Between detector runs
        (`detect_every` > 1) the mesh alone follows the face, at the box the tracker predicts."""
        p, det = self.perception, track.detection
        last = state.meshes.get(track.track_id)
        if det is None:
            if last is None:
                return None
            det = Detection(track.predicted(t), mesh_keypoints(last[0]), track.score)
        if last is not None:
            mesh, box = last
            shift = ((det.box[0] + det.box[2] - box[0] - box[2]) / 2, (det.box[1] + det.box[3] - box[1] - box[3]) / 2)
            face = p.describe(image, det, previous=(mesh, shift), fallback=track.detection is not None)
        else:
            face = p.describe(image, p.refined(image, det))
        if face is not None and face.mesh is not None:
            state.meshes[track.track_id] = (face.mesh, det.box)
        return face

    def _decide(self, state: CameraState, track: Track) -> DecisionEvent:
        started = time.perf_counter()
        event = state.decider.decide(track)
        self._time("match", started)
        state.labels[track.track_id] = event
        state.challenges.pop(track.track_id, None)
        state.meshes.pop(track.track_id, None)
        self.decisions.append(event)
        self.counts[event.decision] += 1
        self.on_decision(event)
        return event

    def _credentials_of(self, camera: str) -> DoorCredentials | None:
        return self.credentials.get(next((d.name for d in self.cfg.door if d.camera == camera), None))

    def _credential_decisions(self) -> None:
        """Cards and PINs that need a decision of their own (no face): every loop, every door."""
        now = time.monotonic()
        for state in self.states.values():
            for event in state.decider.credential_events(now):
                self.decisions.append(event)
                self.counts[event.decision] += 1
                self.on_decision(event)

    def _time(self, stage: str, started: float) -> None:
        self.timings_ms[stage].append((time.perf_counter() - started) * 1000.0)
        self.timing_counts[stage] += 1

    # -- the loop ----------------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> RunSummary:
        self.perception.warm_up()
        if self.liveness is not None:
            self.liveness.crop_score(np.full((160, 160, 3), 128, np.uint8), (40.0, 40.0, 120.0, 120.0))
        started = time.monotonic()
        readers = [CameraReader(cam, realtime=self.realtime).start() for cam in self.cameras]
        self.states = {r.cam.name: self._state(r.cam, r) for r in readers}
        self.observers.start(self)
        poll = MULTI_CAMERA_POLL_S if len(readers) > 1 else 0.1
        try:
            while not self.stop_event.is_set():
                if self.reload_requested.is_set():
                    self._reload()
                for state in self.states.values():
                    frame = state.reader.get(poll)
                    if frame is not None:
                        began = time.perf_counter()
                        self.process(state, frame)
                        state.last_frame_mono = time.monotonic()
                        self.observers.frame(state, frame, time.perf_counter() - began)
                self._credential_decisions()
                self.observers.tick()
                if all(s.reader.done for s in self.states.values()):
                    break
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
            # Tracks still in view when the run ends get their decision now: one per track.
            for state in self.states.values():
                for track in state.tracker.reset():
                    if track.confirmed and state.decider.wants(track):
                        self._decide(state, track)
        finally:
            for state in self.states.values():
                state.reader.stop()
            if self.annotator is not None:
                self.annotator.close()
        summary = self.summary(time.monotonic() - started)
        self.observers.stop(summary)
        return summary

    def summary(self, seconds: float) -> RunSummary:
        stages = dict(self.perception.timings_ms)
        stages.update(self.timings_ms)
        return RunSummary(
            frames=sum(s.frames for s in self.states.values()),
            seconds=seconds,
            faces=self.faces,
            decisions=dict(self.counts),
            latency_ms=[d.latency_ms for d in self.decisions],
            usable_latency_ms=[d.usable_latency_ms for d in self.decisions if d.usable_latency_ms is not None],
            face_latency_ms=[d.face_latency_ms for d in self.decisions if d.face_latency_ms is not None],
            stages_ms={k: float(np.mean(v)) for k, v in stages.items() if v},
            cameras={name: s.reader.stats.to_dict() for name, s in self.states.items()},
        )

    def _reload(self) -> None:
        """SIGHUP: new config and a reopened gallery; tracks in flight keep their evidence. The
        reloader (edge/reloader.py) built and checked everything (None: nothing to swap), so nothing
        raises: assignments only, and the run goes on with all of the old or all of the new."""
        self.reload_requested.clear()
        if self.reloader is None:
            return
        reloaded = self.reloader()
        if reloaded is None:
            return
        cfg, gallery = reloaded.cfg, reloaded.gallery
        if reloaded.perception is not self.perception:
            self.perception = reloaded.perception
            self.models = model_versions(self.perception)
        old, self.gallery, self.cfg, self.rules = self.gallery, gallery, cfg, reloaded.rules
        self.credentials.reconfigure(cfg.door)
        for state in self.states.values():
            state.decider.cfg = cfg.decide
            state.decider.show_names = cfg.privacy.show_names
            state.decider.models = self.models
            state.decider.reload(gallery, self.rules[state.cam.name], self.target_fmr, self._credentials_of(state.cam.name))
            state.tracker.cfg = cfg.track
        if old is not gallery:
            old.close()
