"""Gallery bundles: signed, sealed, sequenced, applied all or nothing; bad ones refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.harness.sync_helpers import MODEL, Hub, new_device, person
from edge.errors import ProtocolError
from edge.gallery import admin
from edge.gallery.records import PersonProfile
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity
from sync.apply import apply_bundle
from sync.bundle import open_bundle
from sync.protocol import (
    FutureSequenceError,
    ReplayError,
    SchemaError,
    SequenceGapError,
    SignatureError,
    device_topic,
    group_gallery_topic,
)
from sync.sealing import NotForThisKey
from sync.signing import key_id

DEVICE = "door-1"
TOPIC = device_topic(DEVICE, "gallery")
SCOPE = f"device:{DEVICE}"
FUZZ_EXAMPLES = int(os.environ.get("FACEGATE_FUZZ_EXAMPLES", "300"))


@pytest.fixture
def device(tmp_path: Path):
    data_dir, kek, ident = new_device(tmp_path, DEVICE)
    with GalleryStore.open(data_dir, kek) as store:
        yield store, ident


def _receive(store: GalleryStore, ident: DeviceIdentity, hub: Hub, payload: bytes, topic: str = TOPIC) -> int:
    return apply_bundle(store, open_bundle(payload, topic, hub.key.public_key(), DEVICE, ident.sealing_key)).version


def _names(store: GalleryStore) -> list[str]:
    return sorted(p.profile.name for p in store.persons())


def test_full_then_incremental_bundles_apply(device) -> None:
    store, ident = device
    hub = Hub()
    assert _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(i) for i in range(5)], full=True)) == 1
    assert _names(store) == [f"person {i:05d}" for i in range(5)]
    _ids, _pids, vectors = store.load_embeddings(MODEL)
    assert np.allclose(vectors[0], person(0).embeddings[0])
    updated = person(1, n_templates=3)
    version = _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [updated, person(7)], removes=[person(2).uid], erases=[person(3).uid]))
    assert version == 2
    assert _names(store) == ["person 00000", "person 00001", "person 00004", "person 00007"]
    assert store.find("person 00001").n_templates == 3
    assert store.sync_state().scopes == {SCOPE: 2}
    assert admin.integrity_check(store) == []


def test_full_bundle_replaces_the_scope_but_not_local_persons(device) -> None:
    store, ident = device
    hub = Hub()
    store.enroll(PersonProfile(name="walk-in customer"), [np.ones(16, np.float32)], [0.5], "kiosk_model")
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(i) for i in range(3)], full=True))
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(2), person(9)], full=True))
    assert _names(store) == ["person 00002", "person 00009", "walk-in customer"]


def test_replayed_and_downgraded_bundles_are_rejected(device) -> None:
    store, ident = device
    hub = Hub()
    first = hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True)
    _receive(store, ident, hub, first)
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(2)]))
    with pytest.raises(ReplayError):
        _receive(store, ident, hub, first)
    with pytest.raises(ReplayError):
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(3)], full=True, seq=2))
    assert store.sync_state().version == 2 and _names(store) == ["person 00001", "person 00002"]


def test_sequence_gap_asks_for_resync(device) -> None:
    store, ident = device
    hub = Hub()
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True))
    hub.bundle(SCOPE, {DEVICE: ident}, [person(2)])  # seq 2 lost on the way
    with pytest.raises(SequenceGapError) as gap:
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(3)]))
    assert (gap.value.scope, gap.value.have) == (SCOPE, 1)
    # the resync answer is a full bundle at the hub's next sequence
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1), person(2), person(3)], full=True))
    assert len(store.persons()) == 3


def test_forged_and_altered_bundles_are_rejected(device) -> None:
    store, ident = device
    hub, forger = Hub(), Hub(key=Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError):
        _receive(store, ident, hub, forger.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True))
    genuine = json.loads(hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True))
    genuine["seq"] = 99  # a bigger sequence would outrank everything the hub sends next
    with pytest.raises(SignatureError):
        _receive(store, ident, hub, json.dumps(genuine).encode())
    assert store.persons() == []


def test_bundle_names_its_signing_key_and_a_wrong_key_id_is_refused(device) -> None:
    store, ident = device
    hub = Hub()
    genuine = json.loads(hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True))
    assert genuine["key_id"] == key_id(hub.key.public_key())
    genuine["key_id"] = "0" * 16  # the signature stays, the claimed key does not exist here
    with pytest.raises(SignatureError, match="does not trust"):
        _receive(store, ident, hub, json.dumps(genuine).encode())
    assert store.persons() == []


def test_sequence_far_ahead_of_the_clock_is_refused_and_real_bundles_still_apply(device) -> None:
    store, ident = device
    hub = Hub()
    with pytest.raises(FutureSequenceError, match="ahead of this device's clock"):  # signed by the real key
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True, seq=2**63 - 1))
    now_us = time.time_ns() // 1000
    with pytest.raises(FutureSequenceError):  # just past the default week
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True, seq=now_us + 8 * 86400 * 10**6))
    assert store.sync_state().scopes == {}
    # a hub clock a day ahead is within the bound, and the next bundle after it still applies
    assert _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True, seq=now_us + 86400 * 10**6)) == 1
    assert _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(2)], full=True, seq=now_us + 86400 * 10**6 + 5)) == 2
    assert _names(store) == ["person 00002"]


def test_erased_uid_is_not_brought_back_by_a_bundle_built_before_the_erase(device) -> None:
    store, ident = device
    hub = Hub()
    p = person(7)
    _receive(store, ident, hub, hub.bundle("group:staff", {DEVICE: ident}, [p], full=True), group_gallery_topic("staff"))
    held_back = hub.bundle(SCOPE, {DEVICE: ident}, [p, person(8)], full=True)  # built before the erase, delivered after
    _receive(store, ident, hub, hub.bundle("group:staff", {DEVICE: ident}, erases=[p.uid], full=True), group_gallery_topic("staff"))
    applied = apply_bundle(store, open_bundle(held_back, TOPIC, hub.key.public_key(), DEVICE, ident.sealing_key))
    assert applied.dropped_erased == (p.uid,)
    assert _names(store) == ["person 00008"]


def test_bundle_for_another_key_or_scope_is_rejected(device, tmp_path: Path) -> None:
    store, ident = device
    hub = Hub()
    _dir, _kek, other = new_device(tmp_path, "door-2")
    with pytest.raises(NotForThisKey):  # this device is not a recipient
        _receive(store, ident, hub, hub.bundle(SCOPE, {"door-2": other}, [person(1)], full=True))
    with pytest.raises(NotForThisKey):  # sealed to another key registered under this device's name
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: other}, [person(1)], full=True))
    with pytest.raises(SchemaError, match="arrived on the topic"):  # re-published on a group topic
        _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True), group_gallery_topic("staff"))
    assert store.persons() == []


def test_truncated_payload_is_rejected(device) -> None:
    store, ident = device
    hub = Hub()
    payload = hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True)
    for cut in (0, 1, len(payload) // 2, len(payload) - 1):
        with pytest.raises(SchemaError):
            _receive(store, ident, hub, payload[:cut])


def test_hub_person_replaces_a_local_person_of_the_same_name(device) -> None:
    store, ident = device
    hub = Hub()
    hub_person = person(4)
    store.enroll(PersonProfile(name=hub_person.profile.name), [np.ones(64, np.float32)], [0.9], MODEL)
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [hub_person], full=True))
    [only] = store.persons()
    assert only.uid == hub_person.uid and only.n_templates == 2


def test_erase_wins_over_a_local_update(device) -> None:
    store, ident = device
    hub = Hub()
    p = person(5)
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, [p], full=True))
    store.enroll(PersonProfile(name=p.profile.name), [np.ones(64, np.float32)], [0.9], MODEL)  # more templates, enrolled offline
    _receive(store, ident, hub, hub.bundle(SCOPE, {DEVICE: ident}, erases=[p.uid]))
    assert store.persons() == [] and store.load_embeddings(MODEL)[0].size == 0


def test_person_in_two_groups_stays_until_both_drop_them(device) -> None:
    store, ident = device
    hub = Hub()
    p = person(6)
    for group in ("staff", "night"):
        _receive(store, ident, hub, hub.bundle(f"group:{group}", {DEVICE: ident}, [p], full=True), group_gallery_topic(group))
    _receive(store, ident, hub, hub.bundle("group:staff", {DEVICE: ident}, removes=[p.uid]), group_gallery_topic("staff"))
    assert _names(store) == ["person 00006"]
    _receive(store, ident, hub, hub.bundle("group:night", {DEVICE: ident}, [], full=True), group_gallery_topic("night"))
    assert store.persons() == []


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory):
    data_dir, kek, ident = new_device(tmp_path_factory.mktemp("fuzz"), DEVICE)
    hub = Hub()
    genuine = hub.bundle(SCOPE, {DEVICE: ident}, [person(1)], full=True)
    with GalleryStore.open(data_dir, kek) as store:
        yield store, ident, hub, genuine


def _json_values() -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
        max_leaves=20,
    )


def _mutations() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=2048) | _json_values().map(lambda v: json.dumps(v).encode())


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_payloads_are_rejected_without_crashing(fuzz_target, data: st.DataObject) -> None:
    store, ident, hub, genuine = fuzz_target
    doc = json.loads(genuine)
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        payload = data.draw(_mutations())
    elif choice == 1:  # one field of a genuine bundle replaced by anything
        key = data.draw(st.sampled_from(sorted(doc)))
        doc[key] = data.draw(_json_values())
        payload = json.dumps(doc).encode()
    elif choice == 2:  # bytes flipped anywhere in a genuine bundle
        raw = bytearray(genuine)
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        payload = bytes(raw)
    else:  # a genuine bundle with an extra field
        doc[data.draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in doc))] = 1
        payload = json.dumps(doc).encode()
    try:
        assume(json.loads(payload) != json.loads(genuine))  # a "mutation" that changed nothing is the genuine bundle
    except (ValueError, UnicodeDecodeError):
        pass
    with pytest.raises(ProtocolError):
        _receive(store, ident, hub, payload)
    assert store.persons() == []
