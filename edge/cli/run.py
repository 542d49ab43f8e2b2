"""`facegate run`: the daemon — cameras in, one JSON line per decision out.

Ctrl-C and SIGTERM stop cleanly (tracks in view get their decision, files are closed);
SIGHUP re-reads the config and reopens the gallery without dropping the cameras.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from edge.cli.common import Handler, config_for, warn
from edge.config import CameraConfig, Config, check_door_cameras
from edge.daemon import Daemon, RunOptions
from edge.errors import ConfigError, FacegateError
from edge.events import ChallengeEvent, DecisionEvent
from edge.video.observer import Observer
from edge.video.pipeline import RunSummary


def cameras_for(sources: list[str], cfg: Config) -> list[CameraConfig]:
    """`--source` replaces the config's cameras (named cam0, cam1, ...); else [[camera]]. With
    `--source`, ConfigError when a [[door]] names a camera that is not among them."""
    if sources:
        cameras = [CameraConfig(name=f"cam{i}", source=src) for i, src in enumerate(sources)]
        problems = check_door_cameras(cfg.door, [c.name for c in cameras])
        if problems:
            raise ConfigError.listing(problems, "--source")
        return cameras
    if not cfg.camera:
        raise ConfigError("no camera: give --source SRC (file, /dev/videoN, URL or folder) or add [[camera]] to the config")
    return list(cfg.camera)


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


def human_line(d: DecisionEvent) -> str:
    who = d.label or "-"  # a uid unless [privacy] show_names: stdout ends up in logs and terminals' scrollback
    score = f"{d.score:.3f}" if d.score is not None else "  -  "
    return (
        f"{d.camera:<8} t={d.source_t:7.2f}s track {d.track_id:<4} {d.decision:<7} {who:<20} "
        f"score {score}  frames {d.frames_used}  {d.latency_ms:6.0f} ms  ({d.reason})"
    )


class DecisionLines(Observer):
    """One human line per decision on `out`, and one JSON line on `events` when asked."""

    name = "events"

    def __init__(self, out: IO[str] | None, events: IO[str] | None) -> None:
        self.out, self.events = out, events

    def on_challenge(self, event: ChallengeEvent) -> None:
        # A human line only: `--events` stays one JSON object per decision.
        if self.out is not None:
            print(f"{event.camera:<8} track {event.track_id:<4} challenge {event.challenge} within {event.timeout_ms / 1000:.1f} s "
                  f"(liveness {event.score:.3f} in [{event.band[0]:.2f}, {event.band[1]:.2f}))", file=self.out, flush=True)

    def on_decision(self, event: DecisionEvent) -> None:
        try:
            if self.events is not None:
                self.events.write(json.dumps(event.body) + "\n")
                self.events.flush()
        finally:  # a full disk under --events must not silence the human lines too
            if self.out is not None:
                print(human_line(event), file=self.out, flush=True)


def _event_streams(target: str | None) -> tuple[IO[str] | None, IO[str] | None]:
    """(human lines, JSON lines) for `--events`: none, a file (appended), or "-" (stdout; lines go to stderr)."""
    if target == "-":
        return sys.stderr, sys.stdout
    if target:
        return sys.stdout, open_private(target)
    return sys.stdout, None


def open_private(path: str) -> IO[str]:
    """`path` for appending, readable by this user only: every line is a decision (with a name
    when [privacy] show_names is on). A regular file made with a wider mode (another tool, an
    older facegate, the default umask) is narrowed to 0600; a FIFO or a device is left alone."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _close_events(events: IO[str]) -> None:
    """A full disk under --events was the events observer's error, contained and counted while
    the run went on; the last buffered lines failing to flush must not turn the end into a crash."""
    try:
        events.close()
    except OSError as exc:
        warn(f"--events: the last decision lines could not be written ({exc.strerror or exc})")


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    # Whatever this process creates (--summary-json, --annotate, the stores' files) is for its
    # user only: it holds decisions, and names where [privacy] show_names lets them out. The
    # systemd unit sets UMask=0077 too; this covers a daemon started from a shell.
    os.umask(0o077)
    out, events = _event_streams(args.events)
    options = RunOptions(
        cameras=cameras_for(args.source, cfg), data_dir=args.data_dir, realtime=args.realtime, annotate=args.annotate,
        reload_config=lambda: config_for(args), observers=(DecisionLines(out, events),), warn=warn,
    )
    try:
        summary = Daemon(cfg, options).start().run(args.max_seconds)
    finally:
        if events is not None and events is not sys.stdout:
            _close_events(events)
    print_summary(summary, sys.stderr)
    if args.summary_json:
        try:
            Path(args.summary_json).write_text(json.dumps(summary.to_dict(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:  # a full disk, a missing directory: one line, not a traceback
            raise FacegateError(f"--summary-json {args.summary_json}: cannot write ({exc.strerror or exc})") from exc
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
    p.set_defaults(func=run(cmd_run), long_running=True)  # core dumps off before a key is read (edge/service/hardening.py)
