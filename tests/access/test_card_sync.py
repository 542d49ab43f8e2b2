"""Cards and PIN hashes are person attributes that travel: stored sealed in the hub's store, sent
in a signed bundle, applied on the device, and found there by card."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from bench.harness.sync_helpers import DIM, MODEL, Hub, new_device, person
from edge.access.credentials import card_id
from edge.gallery.pins import hash_pin
from edge.gallery.records import PersonProfile, profile_from_bytes, profile_to_bytes
from edge.gallery.search import Gallery
from edge.gallery.store import GalleryStore
from sync.apply import apply_bundle
from sync.bundle import PERSON, open_bundle, person_doc, person_from_doc
from sync.hub.store import HubStore
from sync.protocol import device_topic

DEVICE = "door-1"
CARD = card_id(173, 48213)


def test_a_hub_persons_cards_reach_the_device_and_open_by_card(tmp_path: Path) -> None:
    pin_hash = hash_pin("482190")
    ann = person(1)
    ann = dataclasses.replace(ann, profile=dataclasses.replace(ann.profile, cards=(CARD,), pin_hash=pin_hash))
    (tmp_path / "hub").mkdir()
    hub_store = HubStore.open("", tmp_path / "hub", os.urandom(32))
    try:
        hub_store.add_person(ann)
        [stored] = hub_store.persons()
        assert stored.profile.cards == (CARD,) and stored.profile.pin_hash == pin_hash
        assert b"48213" not in (tmp_path / "hub" / "hub.db").read_bytes()
    finally:
        hub_store.close()

    data_dir, kek, ident = new_device(tmp_path, DEVICE)
    hub = Hub()
    payload = hub.bundle(f"device:{DEVICE}", {DEVICE: ident}, [stored], full=True)
    assert b"48213" not in payload and str(CARD).encode() not in payload  # sealed to the device
    with GalleryStore.open(data_dir, kek) as store:
        apply_bundle(store, open_bundle(payload, device_topic(DEVICE, "gallery"), hub.key.public_key(), DEVICE, ident.sealing_key))
    with Gallery.open(data_dir, kek, MODEL, DIM, 0.5) as gallery:
        found = gallery.credentials().person_by_card(CARD)
        assert found is not None and gallery.person(found).uid == ann.uid
        assert gallery.credentials().persons_by_pin("482190") == (found,)


def test_profiles_sealed_before_cards_existed_still_open() -> None:
    doc = person_doc(person(2))
    del doc["profile"]["cards"], doc["profile"]["pin_hash"]  # what an older hub sealed
    old = person_from_doc(PERSON(doc, "p"), "p")
    assert old.profile.cards == () and old.profile.pin_hash == ""
    # ... and what an older device sealed in its gallery
    device_doc = json.loads(profile_to_bytes(PersonProfile("Ann", cards=(CARD,))))
    del device_doc["cards"], device_doc["pin_hash"]
    assert profile_from_bytes(json.dumps(device_doc).encode()) == PersonProfile("Ann")
