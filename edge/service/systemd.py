"""Running under systemd: sd_notify (READY, WATCHDOG, STATUS, STOPPING) and journald logging.

`ServiceObserver` hangs on the pipeline's observer hooks, so READY=1 goes out only once models
and gallery are loaded and the cameras are opening, and WATCHDOG=1 only from the frame loop
itself: a wedged loop (a stuck camera driver, a blocked output) stops the pings and systemd
restarts the unit after `WatchdogSec=`. Without systemd ($NOTIFY_SOCKET unset) every call is a
no-op, so the same daemon runs from a shell, in a container or under another supervisor.

systemd-python's `sd_notify` is used when installed; otherwise a few lines of socket code speak
the same datagram protocol (the protocol is stable and documented in sd_notify(3)).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

from edge.events import DecisionEvent
from edge.video.capture import Frame
from edge.video.observer import Observer
from edge.video.pipeline import CameraState, Pipeline, RunSummary

_LOG = logging.getLogger("facegate")
# STATUS= lines are for `systemctl status`; more often than this is noise in the manager.
STATUS_INTERVAL_S = 5.0


def _systemd_notify() -> Callable[[str], bool] | None:
    try:
        from systemd import daemon  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lambda state: bool(daemon.notify(state))


class Notifier:
    """Sends sd_notify state lines to $NOTIFY_SOCKET; `enabled` is False (and sends are no-ops)
    when the process was not started by systemd with `Type=notify` (or `NotifyAccess=`)."""

    def __init__(self, socket_path: str | None = None, use_systemd_python: bool = True) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        self._native = _systemd_notify() if use_systemd_python and socket_path is None else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """One datagram with `lines` ("READY=1", "STATUS=..."); True when it was sent."""
        if not self.address:
            return False
        state = "\n".join(lines)
        if self._native is not None:
            return self._native(state)
        return self._send(state.encode("utf-8"))

    def _send(self, payload: bytes) -> bool:
        # "@name" is an abstract-namespace socket (systemd uses them in containers).
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, address)
            return True
        except OSError as exc:
            # The manager went away or the socket is not ours: never let that stop the door.
            _LOG.warning("sd_notify to %s failed: %s", self.address, exc)
            return False


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's `WatchdogSec=` ($WATCHDOG_USEC), as sd_watchdog_enabled(3) advises; None
    when no watchdog is set for this process ($WATCHDOG_PID names another one)."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


class ServiceObserver(Observer):
    """READY=1 on start, WATCHDOG=1 from the loop (rate-limited), STATUS= now and then,
    STOPPING=1 at the end. With `journal`, each decision is also logged with its fields
    (FACEGATE_DECISION, FACEGATE_PERSON, ...) so `journalctl FACEGATE_DECISION=deny` works;
    on a terminal `facegate run` already prints one line per decision."""

    name = "systemd"
    acts = False

    def __init__(self, notifier: Notifier | None = None, journal: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier or Notifier()
        self.journal = journal
        self.watchdog_s = watchdog_interval_s()
        self._clock = clock
        self._last_ping = float("-inf")
        self._last_status = float("-inf")
        self._pipeline: Pipeline | None = None
        self._frames = 0
        self._decisions: Counter[str] = Counter()
        self._started = clock()

    def on_start(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._started = self._clock()
        cams = ", ".join(c.name for c in pipeline.cameras)
        self.notifier.notify("READY=1", f"STATUS=running: {len(pipeline.gallery)} people, cameras {cams}")
        _LOG.info("ready: %d people in the gallery, cameras %s", len(pipeline.gallery), cams)
        self._last_status = self._clock()

    def on_frame(self, state: CameraState, frame: Frame, seconds: float) -> None:
        self._frames += 1

    def on_decision(self, decision: DecisionEvent) -> None:
        self._decisions[decision.decision] += 1
        if not self.journal:
            return
        # The journal outlives erasure (and is copied off by log shippers): the name only with
        # [privacy] show_names, like every other channel (edge/events.py).
        shown = decision.person_out()
        _LOG.info(
            "%s %s at %s (track %d, %s)", decision.decision, decision.label or "-", decision.camera, decision.track_id, decision.reason,
            extra={
                "FACEGATE_DECISION": decision.decision, **({"FACEGATE_PERSON": shown["person"] or ""} if "person" in shown else {}),
                "FACEGATE_PERSON_UID": decision.person_uid or "", "FACEGATE_DOOR": decision.door or "",
                "FACEGATE_CAMERA": decision.camera, "FACEGATE_TRACK": decision.track_id,
                "FACEGATE_REASON": decision.reason, "FACEGATE_SCORE": "" if decision.score is None else f"{decision.score:.4f}",
                "FACEGATE_LATENCY_MS": f"{decision.latency_ms:.0f}",
            },
        )

    def on_tick(self) -> None:
        now = self._clock()
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s:
            self.notifier.notify("WATCHDOG=1")
            self._last_ping = now
        if now - self._last_status >= STATUS_INTERVAL_S:
            elapsed = max(now - self._started, 1e-9)
            decided = ", ".join(f"{k} {v}" for k, v in sorted(self._decisions.items())) or "no decisions yet"
            self.notifier.notify(f"STATUS=running: {self._frames} frames ({self._frames / elapsed:.1f} fps), {decided}")
            self._last_status = now

    def on_stop(self, summary: RunSummary) -> None:
        decided = ", ".join(f"{k} {v}" for k, v in sorted(summary.decisions.items())) or "no decisions"
        self.notifier.notify("STOPPING=1", f"STATUS=stopped after {summary.frames} frames: {decided}")


def setup_logging(stream: object = None) -> str:
    """journald (structured fields) when stderr is the journal and systemd-python is there,
    else plain lines on stderr. Returns "journal" or "stderr"."""
    root = logging.getLogger()
    if any(getattr(h, "_facegate", False) for h in root.handlers):
        return "journal" if any(type(h).__name__ == "JournalHandler" for h in root.handlers) else "stderr"
    handler: logging.Handler | None = None
    kind = "stderr"
    # $JOURNAL_STREAM is "dev:inode" of the journal stream systemd gave us; it only counts if
    # stderr still is that stream (a shell redirect inside the unit would replace it).
    if _stderr_is_journal():
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]

            handler, kind = JournalHandler(SYSLOG_IDENTIFIER="facegate"), "journal"
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("facegate: %(message)s"))
    handler._facegate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return kind


def _stderr_is_journal() -> bool:
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return value == f"{st.st_dev}:{st.st_ino}"
