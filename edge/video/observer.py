"""What hangs on the pipeline: `Observer` hooks, and `Observers`, which calls them safely.

Door outputs, the kiosk, metrics, systemd, MQTT and the printed lines are observers. Every hook
runs on the inference thread, so it must be quick (hand slow work to a thread of your own).

Error policy: `on_start` may refuse (its exception stops the start: a door whose relay cannot
be driven must not run). Every later hook is contained: an exception is logged with the
observer's name, counted in `Observers.errors` (`facegate_observer_errors_total`), and the
other observers and the frame loop go on. A metrics bug must not keep a door shut.

A failing observer is called again at its next hook, never switched off: the doors, the kiosk
and sync are observers too, and a door output disabled after a passing fault (a full disk, a
wedged serial port) would stay locked — or unmonitored — until someone restarts the daemon. The
cost of retrying is bounded: the traceback is logged once per LOG_EVERY errors.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edge.events import ChallengeEvent, DecisionEvent

if TYPE_CHECKING:
    from edge.video.capture import Frame
    from edge.video.pipeline import CameraState, Pipeline, RunSummary

_LOG = logging.getLogger(__name__)
# After the first, one logged traceback per this many errors of the same observer hook.
LOG_EVERY = 1000


class Observer:
    """Subclass and override what you need; register with `pipeline.observers.add(...)`."""

    name = "observer"  # label of facegate_observer_errors_total and of log lines
    # False: informational only (metrics, systemd). A decision whose audit record could not be
    # written is still shown to these, never to the observers that act on it (doors, ZeroMQ, MQTT).
    acts = True

    def on_start(self, pipeline: Pipeline) -> None:
        """Models and gallery are loaded and the cameras are opening (systemd READY=1)."""

    def on_frame(self, state: CameraState, frame: Frame, seconds: float) -> None:
        """A frame was processed in `seconds`; `state.tracker.tracks` and `state.labels` are current."""

    def on_decision(self, event: DecisionEvent) -> None:
        """A track was decided (and, under the daemon, audited)."""

    def on_challenge(self, event: ChallengeEvent) -> None:
        """A track was asked for a step-up challenge; its decision follows (edge/video/challenge.py)."""

    def on_unaudited(self, event: DecisionEvent) -> None:
        """A decision whose audit record could not be written (a full disk): an observer that
        acts gets this instead of `on_decision`, and by default does nothing with it. The doors
        use it to raise their alarm, and to open anyway where `require_audit = false`."""

    def on_tick(self) -> None:
        """Every turn of the main loop, frame or not (a wedged loop stops calling it)."""

    def on_stop(self, summary: RunSummary) -> None:
        """The run ended (stop signal, end of files, --max-seconds)."""


class Observers:
    """The pipeline's observers, in the order they were added, each hook call contained."""

    def __init__(self) -> None:
        self._items: list[Observer] = []
        self.errors: Counter[str] = Counter()  # observer name -> hook exceptions

    def add(self, *observers: Observer) -> None:
        self._items.extend(observers)

    def __iter__(self) -> Iterator[Observer]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def start(self, pipeline: Pipeline) -> None:
        for observer in self._items:
            observer.on_start(pipeline)

    def frame(self, state: CameraState, frame: Frame, seconds: float) -> None:
        for observer in self._items:
            self._call(observer, "on_frame", state, frame, seconds)

    def decision(self, event: DecisionEvent, audited: bool = True) -> None:
        for observer in self._items:
            self._call(observer, "on_decision" if audited or not observer.acts else "on_unaudited", event)

    def challenge(self, event: ChallengeEvent) -> None:
        for observer in self._items:
            self._call(observer, "on_challenge", event)

    def tick(self) -> None:
        for observer in self._items:
            self._call(observer, "on_tick")

    def stop(self, summary: RunSummary) -> None:
        for observer in self._items:
            self._call(observer, "on_stop", summary)

    def _call(self, observer: Observer, hook: str, *args: Any) -> None:
        try:
            getattr(observer, hook)(*args)
        except Exception:  # noqa: BLE001 - contained by design (module docstring)
            self.errors[observer.name] += 1
            n = self.errors[observer.name]
            if n == 1 or n % LOG_EVERY == 0:
                _LOG.exception("observer %s failed in %s (%d errors so far); the daemon goes on", observer.name, hook, n)
