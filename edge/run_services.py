"""What `facegate run` attaches to the pipeline besides the cameras: the audit journal and sync.

Every decision becomes a signed record of the device's audit journal (the durable,
tamper-evident trail the hub collects); with `[sync] broker_host` set, the MQTT agent runs
beside the pipeline, ships that journal, applies signed gallery bundles — after which the
pipeline reopens its gallery, as on SIGHUP — and publishes each decision live.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.audit.journal import AuditLog
from edge.config import Config
from edge.gallery.search import Gallery
from edge.video.decide import Decision, Sample
from edge.video.pipeline import Observer, Pipeline, RunSummary

# Audit bodies name persons by uid, never by name: the journal is not encrypted.
_DECISION_FIELDS = ("camera", "track_id", "decision", "reason", "score", "threshold", "frames_used", "latency_ms", "models", "liveness")


def decision_record(decision: Decision, person_uid: str | None) -> dict[str, Any]:
    d = decision.to_dict()
    body = {k: d[k] for k in _DECISION_FIELDS}
    body["person_uid"] = person_uid
    body["captured_at"] = d["first_seen"]
    return body


class AuditObserver(Observer):
    """Appends one `decision` record per decision, and one `config_reload` per reload."""

    def __init__(self, log: AuditLog, gallery: Callable[[], Gallery]) -> None:
        self.log = log
        self._gallery = gallery
        self._uids: dict[str, str | None] = {}

    def on_decision(self, decision: Decision, samples: list[Sample]) -> None:
        uid = None
        if decision.person is not None:
            if decision.person not in self._uids:
                record = self._gallery().store.find(decision.person)
                self._uids[decision.person] = record.uid if record is not None else None
            uid = self._uids[decision.person]
        self.log.append("decision", decision_record(decision, uid))

    def on_start(self, pipeline: Pipeline) -> None:
        self.log.append("start", {"cameras": [c.name for c in pipeline.cameras], "persons": len(pipeline.gallery), "models": pipeline.models})

    def reloaded(self, people: int) -> None:
        self._uids.clear()
        self.log.append("config_reload", {"persons": people})

    def on_stop(self, summary: RunSummary) -> None:
        self.log.append("stop", {"frames": summary.frames, "decisions": summary.decisions})


class SyncObserver(Observer):
    """Runs the sync agent for the pipeline's lifetime and publishes each decision live."""

    def __init__(self, cfg: Config, data_dir: Path, kek: bytes, log: AuditLog, pipeline: Pipeline) -> None:
        from edge.gallery.store import GalleryStore
        from sync.agent import SyncAgent

        # A bundle applied by the agent (on its own thread and SQLite connection) is picked up
        # like a SIGHUP: the inference thread reopens the gallery between two frames.
        self.agent = SyncAgent(
            cfg, lambda: GalleryStore.open(data_dir, kek), log, on_gallery_update=lambda _v: pipeline.reload_requested.set()
        )
        self._started = threading.Event()

    def on_start(self, pipeline: Pipeline) -> None:
        self.agent.start()
        self._started.set()

    def on_decision(self, decision: Decision, samples: list[Sample]) -> None:
        self.agent.publish_event(decision.to_dict())

    def on_stop(self, summary: RunSummary) -> None:
        if self._started.is_set():
            self.agent.stop()
