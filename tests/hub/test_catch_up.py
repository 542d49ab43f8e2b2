"""Catch-ups (sync.hub.catch_up), on SQLite and a real PostgreSQL: a member that lost a delta gets
the group's gallery on its own topic, at the group's newest sequence, and the other members get
nothing; the next delta applies on it as on the others. As an attacker would: a catch-up handed
to another member, put on the group topic, re-addressed, stripped of its address or replayed is
refused; an erasure the member missed is in it and confirmed by its ack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync import protocol
from sync.hub.service import Hub
from sync.protocol import ReplayError, SchemaError, SequenceGapError, SignatureError
from tests.hub.test_deltas import SCOPE, TOPIC, Door, _staff


def _own(name: str) -> str:
    return protocol.device_topic(name, protocol.GALLERY)


def _lost_one(hub: Hub, tmp_path: Path, members: int = 3) -> tuple[list[Door], object]:
    """`members` doors at the group's first bundle; door-0 then misses a delta the others apply."""
    doors = [Door(hub, tmp_path, f"door-{i}") for i in range(members)]
    _staff(hub, 5)
    [full] = hub.bundles(group="staff")
    for d in doors:
        d.receive(full)
    _staff(hub, 1, start=40)
    [missed] = hub.bundles(group="staff")
    for d in doors[1:]:
        d.receive(missed)
    _staff(hub, 1, start=41)
    [delta] = hub.bundles(group="staff")
    with pytest.raises(SequenceGapError):
        doors[0].receive(delta)
    for d in doors[1:]:
        d.receive(delta)
    return doors, delta


def test_a_resync_is_answered_on_the_devices_own_topic_at_the_groups_newest_seq(hub: Hub, tmp_path: Path) -> None:
    doors, delta = _lost_one(hub, tmp_path)
    newest = hub.store.last_bundle(SCOPE)
    catch = hub.resync("door-0", SCOPE)
    assert catch is not None and (catch.topic, catch.kind, catch.seq, catch.persons, catch.recipients) == (_own("door-0"), "full", delta.seq, 7, ("door-0",))
    message = json.loads(catch.payload)
    assert message["to"] == "door-0" and set(message["recipients"]) == {"door-0"}  # one wrap, whatever the group's size
    assert hub.store.last_bundle(SCOPE) == newest  # not a bundle of the group: the others are not moved
    doors[0].receive(catch)
    assert doors[0].seq() == doors[1].seq() == delta.seq and doors[0].uids() == doors[1].uids()
    _staff(hub, 1, start=42)
    [after] = hub.bundles(group="staff")
    assert after.kind == "incremental"
    for d in doors:
        d.receive(after)
        assert len(d.uids()) == 8


def test_a_catch_up_is_refused_anywhere_but_on_its_devices_own_topic(hub: Hub, tmp_path: Path) -> None:
    doors, _delta = _lost_one(hub, tmp_path)
    catch = hub.resync("door-0", SCOPE)
    assert catch is not None
    with pytest.raises(SchemaError):  # on the group topic: every member would take it
        doors[1].open(catch, TOPIC)
    with pytest.raises(SchemaError):  # handed to another member on that member's own topic
        doors[1].open(catch, _own("door-1"))
    with pytest.raises(SchemaError):  # door-0's own device scope is not the group's
        doors[0].open(catch, TOPIC)
    message = json.loads(catch.payload)
    with pytest.raises(SignatureError):  # re-addressed to door-1: the address is signed
        doors[1].open(protocol.encode(dict(message, to="door-1")), _own("door-1"))
    stripped = {k: v for k, v in message.items() if k != "to"}
    with pytest.raises(SignatureError):  # the address removed, passed off as the group's bundle
        doors[1].open(protocol.encode(stripped), TOPIC)
    with pytest.raises(SchemaError):  # a catch-up must be a full bundle of a group
        doors[0].open(protocol.encode(dict(message, kind="incremental", base_seq=1)), _own("door-0"))
    with pytest.raises(SignatureError):
        doors[0].open(protocol.encode(dict(message, scope="group:lobby")), _own("door-0"))
    assert len(doors[0].uids()) == 5  # nothing applied by any of it


def test_an_old_catch_up_replayed_is_refused(hub: Hub, tmp_path: Path) -> None:
    doors, _delta = _lost_one(hub, tmp_path)
    catch = hub.resync("door-0", SCOPE)
    assert catch is not None
    doors[0].receive(catch)
    with pytest.raises(ReplayError):
        doors[0].receive(catch)
    hub.store.remove_person(doors[0].uids()[0])
    [later] = hub.bundles(group="staff")
    doors[0].receive(later)
    with pytest.raises(ReplayError):  # it would bring the removed person back
        doors[0].receive(catch)
    assert len(doors[0].uids()) == 6


def test_a_missed_erasure_travels_in_the_catch_up_and_its_ack_confirms_it(hub: Hub, tmp_path: Path) -> None:
    doors = [Door(hub, tmp_path, f"door-{i}") for i in range(2)]
    alice, *_ = _staff(hub, 4)
    [full] = hub.bundles(group="staff")
    for d in doors:
        d.receive(full)
    hub.store.erase_person(alice)
    [erasure] = hub.bundles(group="staff")  # a ratchet step: the key door-0 holds no longer opens what follows
    doors[1].receive(erasure)  # door-0 misses it
    _staff(hub, 1, start=50)
    [delta] = hub.bundles(group="staff")
    doors[1].receive(delta)
    with pytest.raises(SequenceGapError):
        doors[0].receive(delta)
    assert {r[0] for r in hub.store.db.execute("SELECT device FROM erasures WHERE uid=? AND confirmed IS NULL", (alice,))} == {"door-0"}
    catch = hub.resync("door-0", SCOPE)
    assert catch is not None and alice in doors[0].open(catch).erases
    doors[0].receive(catch)  # records its ack, as the service does
    assert alice not in doors[0].uids() and doors[0].uids() == doors[1].uids()
    assert not hub.store.db.execute("SELECT 1 FROM erasures WHERE uid=? AND confirmed IS NULL", (alice,))
    _staff(hub, 1, start=51)
    [after] = hub.bundles(group="staff")
    for d in doors:  # door-0 holds the ratcheted key from its catch-up
        d.receive(after)
    assert doors[0].uids() == doors[1].uids() and len(doors[0].uids()) == 5


def test_an_ok_ack_wins_over_a_nack_of_the_same_seq(hub: Hub) -> None:
    def ack(ok: bool) -> None:
        hub.store.record_gallery_ack({"device": "door-0", "scope": SCOPE, "seq": 7, "ok": ok, "gallery_version": 1, "error": "" if ok else "gap"})

    ack(False)  # the group's delta first: a gap
    ack(True)  # then the catch-up at the same seq
    assert [a[3] for a in hub.store.gallery_acks("door-0")] == [True]
    ack(False)  # the group's delta after it: a replay, refused; the ok stays
    assert [a[3] for a in hub.store.gallery_acks("door-0")] == [True]


def test_a_device_out_of_the_group_gets_no_catch_up(hub: Hub, tmp_path: Path) -> None:
    doors, _delta = _lost_one(hub, tmp_path)
    hub.store.assign("door-0", ())
    assert hub.resync("door-0", SCOPE) is None
