"""`facegate run`: the daemon — cameras in, one JSON line per decision out.

Ctrl-C and SIGTERM stop cleanly (tracks in view get their decision, files are closed);
SIGHUP re-reads the config and reopens the gallery without dropping the cameras.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from edge.audit.journal import AuditLog
from edge.config import CameraConfig, Config
from edge.errors import ConfigError
from edge.gallery.keys import data_dir_for, load_key
from edge.gallery.search import Gallery
from edge.gallery.thresholds import match_threshold
from edge.perception.embed import embedder_spec
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.modelstore import ModelStore
from edge.run_services import AuditObserver, SyncObserver
from edge.video.decide import Decision
from edge.video.pipeline import Pipeline, RunSummary

Handler = Callable[[argparse.Namespace, Config], int]


def open_gallery(data_dir: Path, cfg: Config, store: ModelStore, create: bool, warn: Callable[[str], None]) -> Gallery:
    key = load_key(data_dir, cfg, create=create, warn=warn)
    threshold = match_threshold(cfg, store)
    dim = embedder_spec(cfg.embed.model).dim
    return Gallery.open(data_dir, key.kek, embedder_model_name(cfg), dim, threshold, create=create, snapshot=cfg.gallery.index_snapshot)


def cameras_for(sources: list[str], cfg: Config) -> list[CameraConfig]:
    """`--source` replaces the config's cameras (named cam0, cam1, ...); else [[camera]]."""
    if sources:
        return [CameraConfig(name=f"cam{i}", source=src) for i, src in enumerate(sources)]
    if not cfg.camera:
        raise ConfigError("no camera: give --source SRC (file, /dev/videoN, URL or folder) or add [[camera]] to the config")
    return list(cfg.camera)


def load_liveness(cfg: Config, perception: Perception) -> Any | None:
    """The liveness checker when `[liveness] enabled`, else None."""
    if not cfg.liveness.enabled:
        return None
    from edge.perception.liveness.checker import Liveness

    return Liveness(cfg, perception.store)


def print_summary(summary: RunSummary, out: IO[str]) -> None:
    d = summary.to_dict()
    decisions = ", ".join(f"{k} {v}" for k, v in sorted(d["decisions"].items())) or "none"
    print(f"\nsummary: {d['frames']} frames in {d['seconds']:.1f} s ({d['fps']:.1f} fps), {d['faces']} faces detected", file=out)
    print(f"decisions: {decisions}", file=out)
    if d["decision_latency_ms_p50"] is not None:
        line = f"decision latency: p50 {d['decision_latency_ms_p50']:.0f} ms, p95 {d['decision_latency_ms_p95']:.0f} ms"
        if d["usable_latency_ms_p50"] is not None:
            # The part of the wait the daemon is responsible for: faces far away, turned or seen
            # from behind make the first figure long by themselves.
            line += f" (from the first good frame: p50 {d['usable_latency_ms_p50']:.0f} ms, p95 {d['usable_latency_ms_p95']:.0f} ms)"
        print(line, file=out)
    stages = ", ".join(f"{k} {v:.1f}" for k, v in d["stages_ms"].items())
    print(f"mean ms per call: {stages}", file=out)
    for name, stats in d["cameras"].items():
        extra = ", ".join(f"{k} {v}" for k, v in stats.items() if k not in ("frames", "decoded") and v)
        print(f"camera {name}: {stats['frames']} frames" + (f" ({extra})" if extra else ""), file=out)


def human_line(d: Decision) -> str:
    who = d.person or "-"
    score = f"{d.score:.3f}" if d.score is not None else "  -  "
    return (
        f"{d.camera:<8} t={d.source_t:7.2f}s track {d.track_id:<4} {d.decision:<7} {who:<20} "
        f"score {score}  frames {d.frames_used}  {d.latency_ms:6.0f} ms  ({d.reason})"
    )


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    perception = Perception(cfg)
    data_dir = data_dir_for(args.data_dir, cfg)
    warn = lambda m: print(f"facegate: warning: {m}", file=sys.stderr)
    gallery = open_gallery(data_dir, cfg, perception.store, create=False, warn=warn)
    events: IO[str] | None = None
    if args.events == "-":
        events = sys.stdout
    elif args.events:
        events = open(args.events, "a", encoding="utf-8")  # noqa: SIM115 - closed below

    def sink(decision: Decision) -> None:
        if events is not None:
            events.write(json.dumps(decision.to_dict()) + "\n")
            events.flush()
        if events is not sys.stdout:
            print(human_line(decision), file=sys.stderr if args.events == "-" else sys.stdout, flush=True)

    pipeline = Pipeline(
        cfg,
        gallery,
        cameras_for(args.source, cfg),
        sink,
        realtime=args.realtime,
        perception=perception,
        liveness=load_liveness(cfg, perception),
        annotate=args.annotate,
    )

    def reload() -> tuple[Config, Gallery]:
        from edge.cli.main import _config

        new_cfg = _config(args)
        gallery = open_gallery(data_dir_for(args.data_dir, new_cfg), new_cfg, pipeline.perception.store, False, warn)
        print(f"facegate: reloaded the config and the gallery ({len(gallery)} people)", file=sys.stderr, flush=True)
        audit.reloaded(len(gallery))
        return new_cfg, gallery

    pipeline.reloader = reload
    audit_log = AuditLog.open(data_dir)
    audit = AuditObserver(audit_log, lambda: pipeline.gallery)
    pipeline.observers.append(audit)
    if cfg.sync.broker_host:
        kek = load_key(data_dir, cfg, create=False).kek
        pipeline.observers.append(SyncObserver(cfg, data_dir, kek, audit_log, pipeline))
    if cfg.door or cfg.zmq.events or cfg.zmq.control:
        from edge.outputs.doors import DoorOutputs  # ZeroMQ, GPIO and OSDP only when configured

        def audit_enroll(record: Any, request_id: str) -> None:
            audit_log.append("enroll", {"person_uid": record.uid, "templates": record.n_templates, "by": f"kiosk:{request_id}"})

        pipeline.observers.append(DoorOutputs(cfg, on_enrolled=audit_enroll))
    from edge.service.systemd import daemon_observers  # sd_notify + watchdog, journald, /metrics

    pipeline.observers += daemon_observers(cfg, data_dir)
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: pipeline.stop_event.set())
    signal.signal(signal.SIGHUP, lambda *_: pipeline.reload_requested.set())
    try:
        summary = pipeline.run(args.max_seconds)
    finally:
        pipeline.gallery.close()
        audit_log.close()
        if events is not None and events is not sys.stdout:
            events.close()
    print_summary(summary, sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=1) + "\n", encoding="utf-8")
    return 0


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("run", help="run the daemon: cameras → decisions (JSON lines)")
    p.add_argument("--source", action="append", default=[], metavar="SRC", help="video file, /dev/videoN, rtsp:// or http:// URL, or a folder of images; repeat for several cameras (replaces [[camera]])")
    p.add_argument("--events", default=None, metavar="FILE|-", help="append one JSON line per decision to FILE, or - for stdout")
    p.add_argument("--realtime", action="store_true", help="play files at their own frame rate (default: as fast as possible)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--annotate", type=Path, default=None, metavar="OUT.mp4", help="write the frames with boxes, track ids and decisions")
    p.add_argument("--data-dir", type=Path, default=None, help="gallery folder (default: [gallery] data_dir)")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the run summary as JSON")
    p.set_defaults(func=run(cmd_run))
