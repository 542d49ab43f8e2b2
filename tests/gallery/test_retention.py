"""Retention enforced on the device (issue 22): a person whose retention or valid_until ended is
refused by the decision path at once and crypto-erased by the sweep exactly as `gallery remove`
does — nothing of them left in the database, its WAL or the index snapshot — each erasure audited
with its reason and counted on /metrics. The clock is injected; nothing patches time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import generate_latest

from edge.access.rules import AreaRegister
from edge.config import CameraConfig, Config, DecideConfig, PrivacyConfig, config_from_dict
from edge.events import DecisionEvent
from edge.gallery import admin, retention
from edge.gallery import snapshot as index_snapshot
from edge.gallery.changes import SyncChange, SyncPerson
from edge.gallery.crypto import new_key
from edge.gallery.records import new_uid
from edge.gallery.retention_policy import DAY_S, RetentionPolicy
from edge.gallery.search import Gallery
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile
from edge.gallery.sync_apply import apply_change
from edge.service.metrics import MetricsObserver
from edge.video.decide import Decider
from edge.video.pipeline import Pipeline
from edge.video.retention_sweep import RetentionSweep
from tests.access.test_rules import _decide
from tests.gallery.test_store import _dir_bytes, _float_windows, _leaks, _raw_rows, _text_needles

MODEL = "edgeface_xxs_int8"
DIM = 32
T0 = 1_780_000_000  # the enrollments' consent time


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True)
def snapshot_small_galleries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_snapshot, "MIN_TEMPLATES", 1)


def test_policy_says_who_is_due_and_why() -> None:
    policy = RetentionPolicy.of(PrivacyConfig(group_retention_days=("kiosk-customers=365", "visitors=30")))
    own = PersonProfile("A", consent_at=T0, retention_days=1)
    assert policy.due(own, T0, None, T0 + DAY_S) is None
    assert policy.due(own, T0, None, T0 + DAY_S + 1) == "retention"
    # no consent time recorded: counted from the enrollment (the row's creation)
    assert policy.due(PersonProfile("A", retention_days=1), T0 + 5, None, T0 + DAY_S + 1) is None
    both = PersonProfile("B", groups=("kiosk-customers", "visitors"), consent_at=T0)
    assert policy.days(both) == 30 and policy.due(both, T0, None, T0 + 31 * DAY_S) == "retention"
    assert policy.days(PersonProfile("C", groups=("staff",))) is None
    assert policy.due(PersonProfile("C", groups=("staff",), consent_at=T0), T0, None, T0 + 99_999 * DAY_S) is None
    assert policy.due(PersonProfile("D", valid_until=T0 + 10), T0, None, T0 + 11) == "expired"
    # last_seen: a returning customer stays; the hub decides for the persons it holds
    seen = RetentionPolicy("last_seen", policy.group_days)
    assert seen.due(own, T0, T0 + 5 * DAY_S, T0 + 5.5 * DAY_S) is None
    assert seen.due(own, T0, T0 + 5 * DAY_S, T0 + 6.5 * DAY_S) == "retention"
    assert seen.due(own, T0, None, T0 + 6 * DAY_S, hub_held=True) is None
    assert seen.due(PersonProfile("D", valid_until=T0), T0, None, T0 + 1, hub_held=True) == "expired"


def test_config_refuses_a_bad_group_retention() -> None:
    for bad in (["kiosk"], ["kiosk=0"], ["=3"], ["a=1", "a=2"], ["a=x"]):
        with pytest.raises(Exception, match="privacy.group_retention_days"):
            config_from_dict({"privacy": {"group_retention_days": bad}})
    with pytest.raises(Exception, match="privacy.retention_from"):
        config_from_dict({"privacy": {"retention_from": "visit"}})


def _three(data_dir: Path, kek: bytes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    faces = {n: _unit(rng.standard_normal((2, DIM))) for n in ("Retained Onedayer", "Valid Untiller", "Staying Forever")}
    profiles = {
        "Retained Onedayer": PersonProfile("Retained Onedayer", groups=("kiosk-customers",), consent_at=T0, consent_text="one day, Onedayer agrees", retention_days=1),
        "Valid Untiller": PersonProfile("Valid Untiller", consent_at=T0, valid_until=T0 + 3600),
        "Staying Forever": PersonProfile("Staying Forever", consent_at=T0),
    }
    with GalleryStore.open(data_dir, kek, create=True) as store:
        for name, vectors in faces.items():
            store.enroll(profiles[name], list(vectors), [1.0, 1.0], MODEL)
    return faces


def test_the_sweep_erases_like_remove_nothing_left_in_db_wal_or_snapshot(tmp_path: Path) -> None:
    kek, data_dir = new_key(), tmp_path / "gallery"
    faces = _three(data_dir, kek, np.random.default_rng(5))
    Gallery.open(data_dir, kek, MODEL, DIM, threshold=0.5, snapshot=True).close()  # writes the index snapshot
    snapshot_files = sorted(data_dir.glob("index-*"))
    assert snapshot_files, "the index snapshot should exist before the sweep"
    with GalleryStore.open(data_dir, kek) as store:
        uids = {p.profile.name: p.uid for p in store.persons()}
    gone = ("Retained Onedayer", "Valid Untiller")
    secret = [blob for name in gone for part in _raw_rows(data_dir / GALLERY_FILE, uids[name]) for blob in (part if isinstance(part, list) else [part])]
    with GalleryStore.open(data_dir, kek) as store:
        assert retention.sweep(store, RetentionPolicy(), T0 + 1800) == []  # not due yet: nothing touched
        erased = retention.sweep(store, RetentionPolicy(), T0 + DAY_S + 60)
        assert sorted((e.uid, e.reason) for e in erased) == sorted([(uids["Retained Onedayer"], "retention"), (uids["Valid Untiller"], "expired")])
        assert [p.profile.name for p in store.persons()] == ["Staying Forever"]
        assert admin.integrity_check(store) == []
        files = _dir_bytes(data_dir)  # open: gallery.db, -wal, -shm
        assert store.index_snapshot_key(MODEL) is None  # the snapshot's key went with the rows
    files.update({f"closed {k}": v for k, v in _dir_bytes(data_dir).items()})
    assert not list(data_dir.glob("index-*")), "the stale index snapshot must be discarded"
    pieces = {blob[k : k + 32] for blob in secret for k in range(0, len(blob) - 31, 32)} | set(secret)
    assert [name for name, data in files.items() for piece in pieces if piece in data] == []
    assert _leaks(files, _text_needles(list(gone) + ["Onedayer agrees"]), _float_windows([v for n in gone for v in faces[n]])) == []


def _rules(cfg: Config, gallery: Gallery) -> dict:
    # The pipeline's own rule building (edge/video/pipeline.py), without cameras or models.
    return Pipeline._rules(SimpleNamespace(areas=AreaRegister(), cameras=[CameraConfig(name="cam0", source="x")]), cfg, gallery)


def test_the_decision_path_refuses_a_due_person_before_any_sweep(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    now = int(time.time())
    faces = {n: _unit(rng.standard_normal(DIM)) for n in ("Ann", "Bob", "Cy", "Di")}
    gallery = Gallery.open(tmp_path, new_key(), MODEL, DIM, threshold=0.5, create=True)
    gallery.enroll(PersonProfile("Ann", consent_at=now - 2 * DAY_S, retention_days=1), [faces["Ann"]], [1.0])
    gallery.enroll(PersonProfile("Bob", consent_at=now - 2 * DAY_S, valid_until=now - 60), [faces["Bob"]], [1.0])
    gallery.enroll(PersonProfile("Cy", consent_at=now - 2 * DAY_S, retention_days=3), [faces["Cy"]], [1.0])
    gallery.enroll(PersonProfile("Di", groups=("kiosk-customers",), consent_at=now - 40 * DAY_S), [faces["Di"]], [1.0])
    cam = CameraConfig(name="cam0", source="x")
    cfg = config_from_dict({"privacy": {"group_retention_days": ["kiosk-customers=30"]}})
    decider = Decider(DecideConfig(), cam, gallery, {}, rules=_rules(cfg, gallery)["cam0"])
    assert _decide(decider, 1, faces["Ann"]) == ("deny", "retention_expired", "Ann")
    assert _decide(decider, 2, faces["Bob"]) == ("deny", "expired", "Bob")
    assert _decide(decider, 3, faces["Cy"]) == ("grant", "match", "Cy")
    assert _decide(decider, 4, faces["Di"]) == ("deny", "retention_expired", "Di")  # the group's site default
    # Counted from the last grant: Ann was granted an hour ago, so she is still welcome.
    seen_cfg = config_from_dict({"privacy": {"retention_from": "last_seen"}})
    retention.record_seen(gallery.store, gallery.store.find("Ann").id, now - 3600)
    decider.reload(gallery, _rules(seen_cfg, gallery)["cam0"], None)
    assert _decide(decider, 5, faces["Ann"]) == ("grant", "match", "Ann")
    assert _decide(decider, 6, faces["Bob"]) == ("deny", "expired", "Bob")  # valid_until whatever the basis
    gallery.close()


def _grant(person_id: int) -> DecisionEvent:
    return SimpleNamespace(decision="grant", person_id=person_id)  # type: ignore[return-value]


def test_the_daemon_sweep_audits_counts_and_reopens(tmp_path: Path) -> None:
    kek, data_dir = new_key(), tmp_path / "gallery"
    _three(data_dir, kek, np.random.default_rng(9))
    clock, mono = [float(T0 + 60)], [0.0]
    audited: list[tuple[str, dict]] = []
    cfg = config_from_dict({"privacy": {"retention_from": "last_seen", "retention_sweep_s": 600.0}})
    store = GalleryStore.open(data_dir, kek)
    pipeline = SimpleNamespace(gallery=SimpleNamespace(store=store), reload_requested=threading.Event())
    sweep = RetentionSweep(lambda: RetentionPolicy.of(cfg.privacy), lambda: cfg.privacy.retention_sweep_s,
                           lambda kind, body: audited.append((kind, body)), clock=lambda: clock[0], monotonic=lambda: mono[0])
    try:
        sweep.on_start(pipeline)  # the sweep at open: nobody due yet
        assert audited == [] and not pipeline.reload_requested.is_set()
        onedayer = store.find("Retained Onedayer")
        clock[0] = T0 + 0.9 * DAY_S
        sweep.on_decision(_grant(onedayer.id))  # granted: with last_seen the day starts again
        clock[0], mono[0] = T0 + 1.5 * DAY_S, 599.0
        sweep.on_tick()
        assert audited == [], "the next sweep is only due after retention_sweep_s"
        mono[0] = 601.0
        sweep.on_tick()
        assert [(k, b["reason"]) for k, b in audited] == [("remove", "expired")]  # Valid Untiller; the Onedayer came back
        assert pipeline.reload_requested.is_set()
        clock[0], mono[0] = T0 + 2 * DAY_S, 1300.0
        sweep.on_tick()
        assert audited[-1] == ("remove", {"person_uid": onedayer.uid, "by": "retention", "reason": "retention"})
        assert [p.profile.name for p in store.persons()] == ["Staying Forever"]
        assert dict(sweep.erased) == {"retention": 1, "expired": 1}
        sweep.on_tick()  # same gallery, interval not over: no sweep
        assert len(audited) == 2
        pipeline.gallery = SimpleNamespace(store=store)  # a reload reopened the gallery: swept at once
        store.enroll(PersonProfile("Late Arrival", consent_at=T0, retention_days=1), [np.ones(DIM, np.float32)], [1.0], MODEL)
        sweep.on_tick()
        assert audited[-1][1]["reason"] == "retention" and store.find("Late Arrival") is None
    finally:
        store.close()
    metrics = MetricsObserver(Config())
    metrics.retention = sweep.erased
    text = generate_latest(metrics.registry).decode()
    assert 'facegate_gallery_retention_erasures_total{reason="retention"} 2.0' in text
    assert 'facegate_gallery_retention_erasures_total{reason="expired"} 1.0' in text


def test_a_hub_person_erased_by_retention_stays_erased(tmp_path: Path) -> None:
    kek, data_dir = new_key(), tmp_path / "gallery"
    person = SyncPerson(new_uid(), PersonProfile("Hub Person", consent_at=T0, retention_days=1), MODEL, (_unit(np.ones(DIM)),), (1.0,))
    with GalleryStore.open(data_dir, kek, create=True) as store:
        apply_change(store, SyncChange("group:shop", 1, 0, True, (person,)))
        [e] = retention.sweep(store, RetentionPolicy(), T0 + 2 * DAY_S)
        assert (e.uid, e.reason) == (person.uid, "retention")
        # a bundle built before the hub's own sweep cannot bring them back
        apply_change(store, SyncChange("group:shop", 2, 1, True, (person,)))
        assert store.persons() == []
