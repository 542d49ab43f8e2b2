"""The Daemon's wiring on real video: audit before the relay, and a failed start leaves nothing open."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import zmq

from bench.harness.fake_gpio import FakeChip
from edge.config import CameraConfig, DoorConfig, LivenessConfig, MetricsConfig, ZmqConfig
from edge.daemon import Daemon, RunOptions
from edge.errors import AuditError, OutputError
from edge.events import DecisionEvent
from edge.gallery.loader import open_gallery
from edge.perception.faces import Perception
from edge.video.observer import Observer
from tests.support.faces import WEBCAM_MAN, enroll_from_video, video_frames, write_stills

RELAY = 17


class Seen(Observer):
    def __init__(self, acts: bool) -> None:
        self.name, self.acts = f"seen-{acts}", acts
        self.events: list[DecisionEvent] = []

    def on_decision(self, event: DecisionEvent) -> None:
        self.events.append(event)


@pytest.fixture
def door_site(shared_data: Path, perception: Perception, tmp_path: Path):
    """A gallery with the webcam man enrolled from the start of his clip; the rest of the clip
    as the door camera; a door on it (liveness off: this is about the wiring, not spoofs)."""
    video = shared_data / "videos" / "apfol_real2.webm"
    cfg = dataclasses.replace(
        perception.cfg, liveness=LivenessConfig(enabled=False), metrics=MetricsConfig(enabled=False),
        door=(DoorConfig(name="lab", camera="door", relay_line=RELAY, liveness_required=False),),
    )
    data_dir = tmp_path / "data"
    with open_gallery(data_dir, cfg, perception.store, create=True) as gallery:
        assert enroll_from_video(gallery, perception, WEBCAM_MAN, video, 0, 70, 7) >= 5
    camera = CameraConfig(name="door", source=str(write_stills(video_frames(video, 100, 214), tmp_path / "door")), fps=30.0)
    return cfg, data_dir, camera


@pytest.mark.parametrize("journal_works", [True, False])
def test_a_grant_whose_audit_record_cannot_be_written_never_reaches_the_relay(door_site, perception: Perception, journal_works: bool) -> None:
    cfg, data_dir, camera = door_site
    chip, acting, watching = FakeChip(), Seen(acts=True), Seen(acts=False)
    daemon = Daemon(cfg, RunOptions([camera], data_dir, observers=(acting, watching), gpio=chip), perception).start()
    if not journal_works:
        append = daemon.journal.append

        def full_disk(kind: str, body: dict) -> object:
            if kind == "decision":
                raise AuditError("database or disk is full")
            return append(kind, body)

        daemon.journal.append = full_disk  # type: ignore[method-assign]
    daemon.run(max_seconds=120)
    grants = [e for e in watching.events if e.decision == "grant"]
    assert [(e.person, e.door) for e in grants] == [(WEBCAM_MAN, "lab")]  # shown to metrics/systemd either way
    relay = [active for _, line, active in chip.opened[0].log if line == RELAY]
    if journal_works:
        assert acting.events == watching.events and relay[:1] == [True]
        assert daemon.pipeline.observers.errors["audit"] == 0
    else:
        assert acting.events == [] and relay == [False] * len(relay)  # never released
        assert daemon.pipeline.observers.errors["audit"] == len(watching.events)
    assert chip.opened[0].closed  # stopped: lines released


def test_a_start_that_fails_stops_what_it_already_started(door_site, perception: Perception, tmp_path: Path) -> None:
    cfg, data_dir, camera = door_site
    ctx = zmq.Context()
    taken = ctx.socket(zmq.REP)
    taken.bind("tcp://127.0.0.1:*")  # another process holds the kiosk's port
    endpoint = taken.getsockopt_string(zmq.LAST_ENDPOINT)
    chip = FakeChip()
    daemon = Daemon(dataclasses.replace(cfg, zmq=ZmqConfig(control=endpoint)), RunOptions([camera], data_dir, gpio=chip), perception)
    try:
        with pytest.raises(OutputError, match="cannot bind"):
            daemon.start()
    finally:
        taken.close(0)
        ctx.term()
    assert chip.opened and chip.opened[0].closed  # the door opened before the failure was closed again
    with pytest.raises(Exception, match="closed"):
        daemon.journal.last_seq()  # and the journal too


def test_a_person_past_retention_is_erased_at_start_and_never_granted(door_site, perception: Perception) -> None:
    """Issue 22: the webcam man, a visitor of a site that keeps visitors one day, seen two days
    after his enrollment (the daemon's clock is injected): erased when the daemon opens the
    gallery, audited with the reason, counted, and his clip never opens the door."""
    from edge.config import PrivacyConfig
    from edge.gallery.keys import load_key
    from edge.gallery.retention_policy import DAY_S
    from edge.gallery.store import GalleryStore
    from edge.perception.faces import embedder_model_name

    cfg, data_dir, camera = door_site
    cfg = dataclasses.replace(cfg, privacy=PrivacyConfig(group_retention_days=("visitors=1",)))
    model = embedder_model_name(cfg)
    with GalleryStore.open(data_dir, load_key(data_dir, cfg, create=False).kek) as store:
        man = store.find(WEBCAM_MAN)
        one = store.person_templates(man.id, model)[0]
        store.enroll(dataclasses.replace(man.profile, groups=("visitors",)), [one.embedding], [one.quality], model)  # now a visitor
    chip, watching = FakeChip(), Seen(acts=False)
    later = lambda: time.time() + 2 * DAY_S  # noqa: E731 - the daemon's wall clock, two days on
    daemon = Daemon(cfg, RunOptions([camera], data_dir, observers=(watching,), gpio=chip, clock=later), perception).start()
    daemon.run(max_seconds=120)
    assert [e for e in watching.events if e.decision == "grant"] == []
    assert watching.events, "the clip should still be decided (unknown or refused)"
    assert dict(daemon.retention.erased) == {"retention": 1, "expired": 0}
    from edge.audit.journal import AuditLog

    with AuditLog.open(data_dir) as journal:
        removes = [r.body for r in journal.since(0, 10_000) if r.kind == "remove"]
    assert removes == [{"person_uid": man.uid, "by": "retention", "reason": "retention"}]
    with GalleryStore.open(data_dir, load_key(data_dir, cfg, create=False).kek) as store:
        assert store.persons() == []
    relay = [active for _, line, active in chip.opened[0].log if line == RELAY]
    assert True not in relay
