"""Incremental bundles and group keys, hub to device, on SQLite and a real PostgreSQL: a one-person
change travels alone, sealed once under the group's key; the device applies deltas in order and
refuses one against the wrong base (then resyncs to a full bundle), a replay, a forged or unsigned
delta, and a re-add of an erased uid; a device removed from a group cannot open the next bundle."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.harness.sync_helpers import new_device, person
from edge.gallery.changes import SyncPerson
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity
from sync import protocol
from sync.apply import apply_bundle
from sync.bundle import MissingGroupKey, open_bundle
from sync.groupkeys import GroupKeyFile
from sync.hub.service import Hub, Outgoing
from sync.protocol import ReplayError, SequenceGapError, SignatureError
from sync.sealing import NotForThisKey

TOPIC = protocol.group_gallery_topic("staff")
SCOPE = "group:staff"


class Door:
    """A device: its gallery, key pair and kept group keys; `receive` is what its agent does."""

    def __init__(self, hub: Hub, root: Path, name: str, groups: tuple[str, ...] = ("staff",)) -> None:
        self.name, self.hub = name, hub
        self.data_dir, self.kek, self.ident = new_device(root, name)
        self.keys = GroupKeyFile.open(self.data_dir)
        hub.store.add_device(name, self.ident.public()["sign_public_key"], self.ident.public()["seal_public_key"], groups)

    def open(self, out: Outgoing | bytes, topic: str | None = None):
        """On `topic`, else the one it was published on (a catch-up: this device's own), else the group's."""
        payload = out.payload if isinstance(out, Outgoing) else out
        topic = topic or (out.topic if isinstance(out, Outgoing) else TOPIC)
        return open_bundle(payload, topic, self.hub.identity.signing_key.public_key(), self.name, self.ident.sealing_key, self.keys)

    def receive(self, out: Outgoing | bytes, topic: str | None = None) -> None:
        content = self.open(out, topic)
        with GalleryStore.open(self.data_dir, self.kek) as store:
            apply_bundle(store, content)
        self.hub.store.record_gallery_ack({"device": self.name, "scope": content.scope, "seq": content.seq, "ok": True, "gallery_version": 0, "error": ""})

    def uids(self) -> list[str]:
        with GalleryStore.open(self.data_dir, self.kek) as store:
            return sorted(p.uid for p in store.persons())

    def seq(self) -> int:
        with GalleryStore.open(self.data_dir, self.kek) as store:
            return store.sync_state().scopes.get(SCOPE, 0)


def _staff(hub: Hub, n: int, start: int = 0) -> list[str]:
    people = [person(i, groups=("staff",)) for i in range(start, start + n)]
    for p in people:
        hub.store.add_person(p)
    return [p.uid for p in people]


def test_a_one_person_change_travels_alone_sealed_once(hub: Hub, tmp_path: Path) -> None:
    doors = [Door(hub, tmp_path, f"door-{i}") for i in range(3)]
    uids = _staff(hub, 20)
    [full] = hub.bundles(group="staff")
    assert full.kind == "full" and full.persons == 20
    for d in doors:
        d.receive(full)
    hub.store.add_person(person(100, groups=("staff",)))  # a new hire
    [delta] = hub.bundles(group="staff")
    assert (delta.kind, delta.persons) == ("incremental", 1)
    message = json.loads(delta.payload)
    assert message["base_seq"] == full.seq and message["recipients"] == {}  # the epoch's key is held: no per-device bytes
    assert len(delta.payload) * 10 < len(full.payload)
    for d in doors:
        d.receive(delta)
        assert d.uids() == sorted([*uids, person(100).uid])
    hub.store.remove_person(uids[0])  # removed and erased travel as deltas too
    hub.store.erase_person(uids[1])
    [delta2] = hub.bundles(group="staff")
    content = doors[0].open(delta2)
    assert content.kind == "incremental" and set(content.removes) == {uids[0], uids[1]} and content.erases == (uids[1],)
    for d in doors:
        d.receive(delta2)
        assert d.uids() == sorted([*uids[2:], person(100).uid])


def test_a_device_new_to_the_group_gets_a_catch_up_and_the_others_a_delta(hub: Hub, tmp_path: Path) -> None:
    first = Door(hub, tmp_path, "door-1")
    _staff(hub, 5)
    first.receive(hub.bundles(group="staff")[0])
    late = Door(hub, tmp_path, "door-2")
    _staff(hub, 1, start=50)
    catch, delta = hub.bundles(group="staff")  # door-2 has nothing to build on: the whole gallery, to it alone, first
    assert (catch.kind, catch.persons, catch.topic, catch.recipients) == ("full", 6, protocol.device_topic("door-2", protocol.GALLERY), ("door-2",))
    assert (delta.kind, delta.persons, delta.topic) == ("incremental", 1, TOPIC) and catch.seq == delta.seq
    first.receive(delta)
    late.receive(catch)
    with pytest.raises(ReplayError):  # the group's delta after it: already there
        late.receive(delta)
    assert len(first.uids()) == len(late.uids()) == 6 and first.seq() == late.seq()
    _staff(hub, 1, start=51)
    [next_delta] = hub.bundles(group="staff")  # both are members now
    for d in (first, late):
        d.receive(next_delta)
        assert len(d.uids()) == 7


def test_a_delta_against_the_wrong_base_is_refused_and_the_resync_heals(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    _staff(hub, 5)
    door.receive(hub.bundles(group="staff")[0])
    _staff(hub, 1, start=60)
    [missed] = hub.bundles(group="staff")  # never delivered to this device
    _staff(hub, 1, start=61)
    [delta] = hub.bundles(group="staff")
    assert delta.kind == "incremental" and json.loads(delta.payload)["base_seq"] == missed.seq
    before = door.seq()
    with pytest.raises(SequenceGapError):
        door.receive(delta)
    assert door.seq() == before and len(door.uids()) == 5  # nothing applied
    resync = hub.resync("door-1", SCOPE)
    assert resync is not None and resync.kind == "full" and resync.topic == protocol.device_topic("door-1", protocol.GALLERY)
    door.receive(resync)
    assert len(door.uids()) == 7


def test_replayed_forged_and_unsigned_deltas_are_refused(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    _staff(hub, 1, start=70)
    [delta] = hub.bundles(group="staff")
    message = json.loads(delta.payload)
    forged = dict(message, base_seq=door.seq(), sig="00" * 64)
    with pytest.raises(SignatureError):
        door.open(protocol.encode(forged))
    unsigned = {k: v for k, v in message.items() if k not in ("sig", "key_id")}
    with pytest.raises(protocol.ProtocolError):
        door.open(protocol.encode(unsigned))
    altered = dict(message, kind="full", base_seq=None)  # a delta passed off as a full bundle would empty the scope
    with pytest.raises(SignatureError):
        door.open(protocol.encode(altered))
    door.receive(delta)
    with pytest.raises(ReplayError):
        door.receive(delta)
    assert len(door.uids()) == 4


def test_a_delta_cannot_bring_back_an_erased_uid(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    alice, *_ = _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    hub.store.erase_person(alice)
    door.receive(hub.bundles(group="staff")[0])
    assert alice not in door.uids()
    # A hub bug or a restored backup: alice's uid again, in a genuine signed delta. The tombstone holds.
    hub.store.db.execute("DELETE FROM persons WHERE uid=?", (alice,))
    hub.store.add_person(person(0, groups=("staff",)))
    [delta] = hub.bundles(group="staff")
    assert delta.kind == "incremental" and alice in [p.uid for p in door.open(delta).upserts]
    door.receive(delta)
    assert alice not in door.uids() and len(door.uids()) == 2


def test_a_device_removed_from_the_group_cannot_open_the_next_bundles(hub: Hub, tmp_path: Path) -> None:
    stays, leaves = Door(hub, tmp_path, "door-1"), Door(hub, tmp_path, "door-2")
    _staff(hub, 4)
    full = hub.bundles(group="staff")[0]
    for d in (stays, leaves):
        d.receive(full)
    hub.store.assign("door-2", ())  # door-2 leaves the group
    _staff(hub, 1, start=80)
    [delta] = hub.bundles(group="staff")
    message = json.loads(delta.payload)
    assert delta.kind == "incremental" and message["epoch"] != json.loads(full.payload)["epoch"] and set(message["recipients"]) == {"door-1"}
    with pytest.raises(NotForThisKey):
        leaves.open(delta)
    stripped = protocol.encode(dict(message, recipients={}))  # without the wraps: its old key does not open it either
    with pytest.raises((NotForThisKey, SignatureError, MissingGroupKey)):
        leaves.open(stripped)
    stays.receive(delta)
    assert len(stays.uids()) == 5
    _staff(hub, 1, start=81)
    [later] = hub.bundles(group="staff")
    assert json.loads(later.payload)["recipients"] == {}
    with pytest.raises(MissingGroupKey):  # an epoch it never had: it would ask for a resync, which the hub refuses (not a member)
        leaves.open(later)
    assert hub.resync("door-2", SCOPE) is None
    [full2] = hub.bundles(group="staff", full=True)
    with pytest.raises(NotForThisKey):
        leaves.open(full2)
    stays.receive(later)
    assert len(stays.uids()) == 6


def test_group_keys_survive_a_device_restart(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    _staff(hub, 2)
    door.receive(hub.bundles(group="staff")[0])
    door.keys = GroupKeyFile.open(door.data_dir)  # the agent restarted: keys read back from group_keys.json
    _staff(hub, 1, start=90)
    door.receive(hub.bundles(group="staff")[0])
    assert len(door.uids()) == 3
    (door.data_dir / "group_keys.json").write_text("{not json")  # lost: the next delta asks for a resync
    door.keys = GroupKeyFile.open(door.data_dir)
    _staff(hub, 1, start=91)
    with pytest.raises(MissingGroupKey):
        door.receive(hub.bundles(group="staff")[0])


def test_stored_device_identity_is_unchanged(tmp_path: Path) -> None:
    """Group keys are kept wrapped: the file holds nothing the device key alone does not open."""
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    keys = GroupKeyFile.open(data_dir)
    keys.put(SCOPE, 5, "ab" * 32, "cd" * 60)
    assert GroupKeyFile.open(data_dir).get(SCOPE, 5) == ("ab" * 32, "cd" * 60) and (data_dir / "group_keys.json").stat().st_mode & 0o077 == 0
    assert DeviceIdentity.open(data_dir).public()  # and the device's own key files are apart from it


def test_out_of_order_deltas_apply_only_in_order(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    _staff(hub, 1, start=95)
    [first] = hub.bundles(group="staff")
    _staff(hub, 1, start=96)
    [second] = hub.bundles(group="staff")
    with pytest.raises(SequenceGapError):  # the later delta first: it builds on one not applied yet
        door.receive(second)
    assert len(door.uids()) == 3
    door.receive(first)
    door.receive(second)  # delivered again (the broker's session, or the resync's full bundle instead)
    with pytest.raises(ReplayError):
        door.receive(first)
    assert len(door.uids()) == 5


def test_an_erasure_starts_a_new_group_key_epoch(hub: Hub, tmp_path: Path) -> None:
    """The hub must not keep a key that opens captured bundles which carried an erased person: the
    epoch advances by the ratchet (no wraps; tests/hub/test_ratchet.py)."""
    door = Door(hub, tmp_path, "door-1")
    alice, *_ = _staff(hub, 3)
    full = hub.bundles(group="staff")[0]
    door.receive(full)
    old_epoch = json.loads(full.payload)["epoch"]
    hub.store.erase_person(alice)
    [delta] = hub.bundles(group="staff")
    message = json.loads(delta.payload)
    assert delta.kind == "incremental" and message["epoch"] == old_epoch + 1 and message["recipients"] == {} and message["ratchet_base"] == old_epoch
    assert [r[0] for r in hub.store.db.execute("SELECT epoch FROM group_epochs WHERE scope=?", (SCOPE,))] == [message["epoch"]]
    door.receive(delta)
    assert alice not in door.uids()


def test_a_change_in_another_group_is_not_in_this_groups_delta_but_a_move_out_is(hub: Hub, tmp_path: Path) -> None:
    door = Door(hub, tmp_path, "door-1")
    staff = _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    lobby = person(200, groups=("lobby",))
    hub.store.add_person(lobby)  # nothing to do with this door
    moved = next(p for p in hub.store.persons() if p.uid == staff[0])
    hub.store.db.execute("DELETE FROM persons WHERE uid=?", (moved.uid,))  # moved out of staff, as a console edit does
    hub.store.add_person(SyncPerson(moved.uid, dataclasses.replace(moved.profile, groups=("lobby",)), moved.model, moved.embeddings, moved.qualities))
    [delta] = hub.bundles(group="staff")
    content = door.open(delta)
    assert content.kind == "incremental" and content.upserts == () and content.removes == (staff[0],)
    door.receive(delta)
    assert door.uids() == sorted(staff[1:])


def test_a_person_added_while_a_full_bundle_was_built_and_removed_after_is_removed(hub: Hub, tmp_path: Path) -> None:
    """The full bundle read its version before its persons: the person added in between is in it."""
    door = Door(hub, tmp_path, "door-1")
    _staff(hub, 2)
    from sync.hub import versions

    before = versions.current(hub.store.db)
    [late] = _staff(hub, 1, start=300)
    [full] = hub.bundles(group="staff")
    hub.store.db.execute("UPDATE bundles SET version=? WHERE seq=?", (before, full.seq))  # as if read before the add committed
    door.receive(full)
    assert late in door.uids()
    hub.store.remove_person(late)
    [delta] = hub.bundles(group="staff")
    assert door.open(delta).removes == (late,)
    door.receive(delta)
    assert late not in door.uids()
