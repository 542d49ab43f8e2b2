"""The daemon's retention sweep: persons whose retention or validity ended, crypto-erased.

`RetentionSweep` is an observer on the inference thread (the thread that owns the running
gallery): at start, after every gallery reopen and every `[privacy] retention_sweep_s` it runs `edge.gallery.retention.sweep`,
audits each erasure (`remove`, by `retention`, with its reason), counts it for
`facegate_gallery_retention_erasures_total{reason}`, and asks for a gallery reopen so the search
index drops the erased templates. With `retention_from = "last_seen"` it also records each grant
(`record_seen`). Between two sweeps a due person is refused by the decision path already
(`edge.access.rules.CameraRules`, reason `retention_expired` / `expired`).

`clock` is the wall clock the deadlines are compared with (tests pass their own).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge.errors import FacegateError
from edge.events import DecisionEvent
from edge.gallery import retention
from edge.gallery.retention_policy import REASONS, RetentionPolicy
from edge.video.observer import Observer

if TYPE_CHECKING:
    from edge.video.pipeline import Pipeline

_LOG = logging.getLogger(__name__)


class RetentionSweep(Observer):
    name = "retention"

    def __init__(self, policy: Callable[[], RetentionPolicy], interval_s: Callable[[], float], audit: Callable[[str, dict[str, Any]], object],
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy  # the current config's (a reload may change it)
        self.interval_s = interval_s
        self.audit = audit
        self.clock = clock
        self.monotonic = monotonic
        self.erased: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self.pipeline: Pipeline | None = None
        self._next = 0.0
        self._swept: object = None  # the gallery object last swept

    def on_start(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.sweep()

    def on_tick(self) -> None:
        # Also whenever the gallery was reopened (SIGHUP, a hub bundle): at every gallery open.
        if self.pipeline is not None and (self.monotonic() >= self._next or self.pipeline.gallery is not self._swept):
            self.sweep()

    def on_decision(self, event: DecisionEvent) -> None:
        if self.pipeline is None or event.decision != "grant" or event.person_id is None or self.policy().basis != "last_seen":
            return
        retention.record_seen(self.pipeline.gallery.store, event.person_id, int(self.clock()))

    def sweep(self) -> list[retention.Erasure]:
        """One sweep now; the erasures, each audited and counted."""
        assert self.pipeline is not None
        self._next = self.monotonic() + self.interval_s()
        self._swept = self.pipeline.gallery
        erased = retention.sweep(self.pipeline.gallery.store, self.policy(), self.clock())
        for e in erased:
            self.erased[e.reason] += 1
            _LOG.info("person %s erased: %s", e.uid, e.reason)
            try:
                self.audit("remove", {"person_uid": e.uid, "by": "retention", "reason": e.reason})
            except FacegateError as exc:  # the erasure stands; the journal's health raises the alarm
                _LOG.error("retention erasure of %s not audited: %s", e.uid, exc)
        if erased:
            self.pipeline.reload_requested.set()  # the search index still holds their templates
        return erased
