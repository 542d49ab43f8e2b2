"""Prometheus metrics and health for the daemon, fed from the pipeline's observer hooks.

Everything the inference thread knows first-hand (frames, stage timings, decisions) is recorded
in the hooks; what other threads own (capture drop counters, the sync outbox) is read when
Prometheus scrapes, by `_ScrapeCollector`, so nothing here adds locks to the frame path.
Names follow Prometheus conventions: `facegate_` prefix, base units (seconds), `_total` on
counters, `_info` gauges for versions. The list is in docs/operations.md.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import closing
from importlib import metadata
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.audit.health import AuditHealth
from edge.config import Config
from edge.events import DECISIONS, DecisionEvent
from edge.service.metrics_http import Health, MetricsServer
from edge.video.capture import Frame
from edge.video.observer import Observer
from edge.video.pipeline import CameraState, Pipeline, RunSummary

_LOG = logging.getLogger("facegate")
# Stage calls take 0.1 ms (tracking) to ~100 ms (an embedder on a Pi); decisions 50 ms to seconds.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DECISION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
FPS_WINDOW_S = 5.0
# SourceStats field → `reason` label of facegate_dropped_frames_total.
DROP_REASONS = {"dropped_stale": "stale", "skipped_fps": "fps_cap", "corrupt": "corrupt"}


def _version() -> str:
    try:
        return metadata.version("facegate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class MetricsObserver(Observer):
    """Feeds a registry of its own (several pipelines in one test process do not collide)."""

    name = "metrics"
    acts = False

    def __init__(self, cfg: Config, data_dir: Path | None = None, registry: CollectorRegistry | None = None,
                 audit_health: AuditHealth | None = None) -> None:
        self.cfg = cfg
        self.audit_health = audit_health  # the daemon's journal (edge/audit/health.py), read at scrape time
        self.retention: Mapping[str, int] | None = None  # retention erasures by reason, read at scrape time
        self.registry = registry or CollectorRegistry()
        self.health = Health(cfg.metrics.stall_s)
        self.server: MetricsServer | None = None
        r = self.registry
        Gauge("facegate_build_info", "facegate version running", ["version"], registry=r).labels(_version()).set(1)
        self.model_info = Gauge("facegate_model_info", "Models in use (name@version from models/manifest.toml)", ["role", "model", "version"], registry=r)
        self.frames = Counter("facegate_frames_total", "Frames processed by the inference loop", ["camera"], registry=r)
        self.frame_seconds = Histogram("facegate_frame_duration_seconds", "Time to process one frame (all stages)", ["camera"], buckets=STAGE_BUCKETS, registry=r)
        self.stage_seconds = Histogram("facegate_stage_duration_seconds", "Time per call of each pipeline stage", ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.fps = Gauge("facegate_fps", f"Frames processed per second over the last {FPS_WINDOW_S:.0f} s", ["camera"], registry=r)
        self.decisions = Counter("facegate_decisions_total", "Decisions by outcome (one per track)", ["camera", "decision"], registry=r)
        self.decision_latency = Histogram(
            "facegate_decision_latency_seconds", "Capture of a track's first frame to its decision", ["decision"], buckets=DECISION_BUCKETS, registry=r
        )
        self.liveness_rejects = Counter("facegate_liveness_rejects_total", "Tracks judged a presentation attack (decision spoof)", ["camera"], registry=r)
        self.challenges = Counter(
            "facegate_liveness_challenges_total", "Decided tracks whose liveness was uncertain at their door, by step-up outcome",
            ["camera", "outcome"], registry=r,
        )
        self.gallery_persons = Gauge("facegate_gallery_persons", "People with a template of the configured embedder", registry=r)
        self.match_threshold = Gauge(
            "facegate_match_threshold", "Cosine threshold 1:N identification names a person at (follows the gallery's size)", registry=r
        )
        self.match_verify_threshold = Gauge("facegate_match_verify_threshold", "Cosine threshold of 1:1 verification (card / PIN doors)", registry=r)
        self.gallery_templates = Gauge("facegate_gallery_templates", "Templates of the configured embedder: the N the 1:N threshold follows", registry=r)
        self.gallery_version = Gauge("facegate_gallery_version", "Hub bundles applied to the gallery, ever (0 without sync)", registry=r)
        self.ready = Gauge("facegate_ready", "1 while the pipeline runs (models and gallery loaded), else 0", registry=r)
        self._pipeline: Pipeline | None = None
        self._gallery: object = None
        self._stage_seen: dict[str, tuple[int, int]] = {}  # stage → (id of its timing counter, calls seen)
        self._frame_times: dict[str, deque[float]] = {}
        r.register(_ScrapeCollector(self, data_dir if cfg.sync.broker_host else None))

    @classmethod
    def serve(cls, cfg: Config, data_dir: Path | None = None, audit_health: AuditHealth | None = None,
              retention: Mapping[str, int] | None = None) -> MetricsObserver:
        """An observer with its HTTP endpoint started on `[metrics] address:port`. A port that is
        taken is logged and skipped: a door must not stay locked for want of a metrics port.
        `retention`: the daemon's retention erasures by reason (edge/video/retention_sweep.py)."""
        observer = cls(cfg, data_dir, audit_health=audit_health)
        observer.retention = retention
        try:
            observer.server = MetricsServer(cfg.metrics.address, cfg.metrics.port, observer.registry, observer.health).start()
        except OSError as exc:
            _LOG.warning("metrics: cannot listen on %s:%d (%s); running without /metrics", cfg.metrics.address, cfg.metrics.port, exc.strerror or exc)
            return observer
        _LOG.info("metrics on %s/metrics (health: /healthz, /readyz)", observer.server.url)
        return observer

    # -- hooks (inference thread) --------------------------------------------------------------

    def on_start(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        for cam in pipeline.cameras:
            for decision in DECISIONS:  # every series exists from the start: rate() needs a zero
                self.decisions.labels(cam.name, decision)
            self.liveness_rejects.labels(cam.name)
            self.frames.labels(cam.name)
        self._models_changed(pipeline)
        self._gallery_changed(pipeline)
        self.ready.set(1)
        self.health.started()

    def on_frame(self, state: CameraState, frame: Frame, seconds: float) -> None:
        name = state.cam.name
        self.frames.labels(name).inc()
        self.frame_seconds.labels(name).observe(seconds)
        now = time.monotonic()
        times = self._frame_times.setdefault(name, deque())
        times.append(now)
        while times and now - times[0] > FPS_WINDOW_S:
            times.popleft()
        self.fps.labels(name).set(len(times) / FPS_WINDOW_S if len(times) > 1 else 0.0)
        pipeline = self._pipeline
        if pipeline is None:
            return
        self._observe_stages(pipeline.perception.timings_ms, pipeline.perception.timing_counts)
        self._observe_stages(pipeline.timings_ms, pipeline.timing_counts)
        if pipeline.gallery is not self._gallery:  # SIGHUP reopened it (and maybe the models)
            self._gallery_changed(pipeline)
            self._models_changed(pipeline)

    def on_decision(self, decision: DecisionEvent) -> None:
        # An enrollment between two reopenings (kiosk) moves the threshold: the decision says where.
        self.match_threshold.set(decision.threshold)
        self.gallery_templates.set(decision.gallery_templates)
        self.decisions.labels(decision.camera, decision.decision).inc()
        self.decision_latency.labels(decision.decision).observe(decision.latency_ms / 1000.0)
        if decision.decision == "spoof":
            self.liveness_rejects.labels(decision.camera).inc()
        step_up = decision.liveness.step_up if decision.liveness is not None else None
        if step_up is not None:
            self.challenges.labels(decision.camera, step_up.outcome).inc()

    def on_tick(self) -> None:
        self.health.tick()

    def on_stop(self, summary: RunSummary) -> None:
        self.ready.set(0)
        self.health.stopped()
        for name in self._frame_times:
            self.fps.labels(name).set(0.0)
        if self.server is not None:
            self.server.stop()

    # -- helpers -------------------------------------------------------------------------------

    def _observe_stages(self, timings: dict[str, deque[float]], counts: Mapping[str, int]) -> None:
        # The pipeline keeps the last timings per stage in bounded deques and counts every call;
        # pick up only the calls since the last frame. A reload builds a new Perception with
        # new counters, hence the counter identity in the bookmark.
        for stage, values in list(timings.items()):
            counter_id, seen = self._stage_seen.get(stage, (0, 0))
            if counter_id != id(counts):
                seen = 0
            new = min(counts[stage] - seen, len(values))
            histogram = self.stage_seconds.labels(stage)
            for i in range(new, 0, -1):
                histogram.observe(values[-i] / 1000.0)
            self._stage_seen[stage] = (id(counts), counts[stage])

    def _gallery_changed(self, pipeline: Pipeline) -> None:
        self._gallery = pipeline.gallery
        self.gallery_persons.set(len(pipeline.gallery))
        self.gallery_templates.set(pipeline.gallery.templates)
        self.match_threshold.set(pipeline.gallery.threshold)
        self.match_verify_threshold.set(pipeline.gallery.verify_threshold)
        self.gallery_version.set(pipeline.gallery.store.sync_state().version)

    def _models_changed(self, pipeline: Pipeline) -> None:
        self.model_info.clear()
        for role, spec in pipeline.models.items():
            model, _, version = spec.partition("@")
            self.model_info.labels(role, model, version or "unknown").set(1)


class _ScrapeCollector(Collector):
    """Values owned by other threads or processes, read at scrape time."""

    def __init__(self, observer: MetricsObserver, sync_data_dir: Path | None) -> None:
        self.observer = observer
        self.sync_data_dir = sync_data_dir

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pipeline = self.observer._pipeline
        dropped = CounterMetricFamily("facegate_dropped_frames", "Frames not processed, by reason (stale: a newer frame replaced it; fps_cap; corrupt)", labels=["camera", "reason"])
        reconnects = CounterMetricFamily("facegate_camera_reconnects", "Times a camera or stream was reopened", labels=["camera"])
        age = GaugeMetricFamily("facegate_loop_last_tick_age_seconds", "Seconds since the frame loop last turned (the watchdog's view)")
        states = list(pipeline.states.values()) if pipeline is not None else []
        for state in states:
            stats = state.reader.stats
            for field_name, reason in DROP_REASONS.items():
                dropped.add_metric([state.cam.name, reason], getattr(stats, field_name))
            reconnects.add_metric([state.cam.name], stats.reconnects)
        yield dropped
        yield reconnects
        if pipeline is not None:
            errors = CounterMetricFamily(
                "facegate_observer_errors", "Exceptions contained in an observer (outputs, sync, metrics...) or the audit step", labels=["observer"]
            )
            for name, count in sorted(pipeline.observers.errors.items()):
                errors.add_metric([name], count)
            yield errors
            yield CounterMetricFamily(
                "facegate_config_reload_failures", "New configs refused on reload (SIGHUP, ZeroMQ reload, hub bundle); the daemon kept the one it runs on",
                value=pipeline.reload_failures,
            )
        tick_age = self.observer.health.tick_age()
        if tick_age is not None:
            age.add_metric([], tick_age)
            yield age
        yield from self._audit()
        if self.observer.retention is not None:
            erased = CounterMetricFamily("facegate_gallery_retention_erasures", "Persons crypto-erased because their retention or valid_until ended, by reason",
                                         labels=["reason"])
            for reason, count in sorted(self.observer.retention.items()):
                erased.add_metric([reason], count)
            yield erased
        if self.sync_data_dir is not None:
            depth = outbox_depth(self.sync_data_dir)
            if depth is not None:
                yield GaugeMetricFamily("facegate_sync_outbox_depth", "Audit records and uploads not yet acknowledged by the hub", value=depth)
            pruned = audit_pruned(self.sync_data_dir)  # [audit] retention_days: the sync agent prunes (docs/audit.md#retention)
            if pruned is not None:
                yield CounterMetricFamily("facegate_audit_pruned_records", "Audit records pruned after the hub acknowledged them, over the journal's life", value=pruned[0])
                yield GaugeMetricFamily("facegate_audit_first_seq", "Sequence number of the oldest record left in the audit journal", value=pruned[1])


    def _audit(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        health = self.observer.audit_health
        if health is None:
            return
        yield GaugeMetricFamily("facegate_audit_writable", "1 while the audit journal takes records (its last write worked), else 0", value=int(health.writable))
        yield CounterMetricFamily("facegate_audit_write_failures", "Audit journal appends that failed (a full disk, an unwritable file)", value=health.failures)
        refused = CounterMetricFamily("facegate_door_grants_refused", "Grants a door did not open on, by reason (audit_unavailable: no durable record)", labels=["door", "reason"])
        counts = {d.name: 0 for d in self.observer.cfg.door if d.require_audit} | health.refused_by_door()
        for door, count in sorted(counts.items()):  # every door's series from the start: rate() needs a zero
            refused.add_metric([door, "audit_unavailable"], count)
        yield refused


def outbox_depth(data_dir: Path) -> int | None:
    """Rows in the sync outbox plus journal records not yet copied into it — what the agent
    reports as its queue depth — read from the files so it works whether `facegate sync run`
    runs in this process or beside it. None while sync has not created the outbox yet."""
    from edge.audit.journal import AUDIT_FILE
    from sync.outbox import OUTBOX_FILE

    outbox, journal = Path(data_dir) / OUTBOX_FILE, Path(data_dir) / AUDIT_FILE
    if not outbox.exists():
        return None
    try:
        with closing(_read_only(outbox)) as db:
            rows = int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
            cursor = db.execute("SELECT value FROM meta WHERE key='audit_cursor'").fetchone()
        last = 0
        if journal.exists():
            with closing(_read_only(journal)) as db:
                last = int(db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0)
    except sqlite3.Error as exc:
        _LOG.warning("metrics: cannot read the sync outbox in %s: %s", data_dir, exc)
        return None
    return rows + max(0, last - (int(cursor[0]) if cursor else 0))


def audit_pruned(data_dir: Path) -> tuple[int, int] | None:
    """(records pruned so far, the oldest record's seq) from the journal file: its newest
    checkpoint's `pruned_upto` (edge.audit.checkpoint); None without a journal."""
    from edge.audit.journal import AUDIT_FILE

    path = Path(data_dir) / AUDIT_FILE
    if not path.exists():
        return None
    try:
        with closing(_read_only(path)) as db:
            row = db.execute("SELECT json_extract(body, '$.pruned_upto') FROM records WHERE kind='checkpoint' ORDER BY seq DESC LIMIT 1").fetchone()
            first = db.execute("SELECT coalesce(min(seq), 0) FROM records").fetchone()[0]
    except sqlite3.Error as exc:
        _LOG.warning("metrics: cannot read the audit journal in %s: %s", data_dir, exc)
        return None
    return int(row[0]) if row and isinstance(row[0], int) else 0, int(first)


def _read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: a scrape never creates or writes a database.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
