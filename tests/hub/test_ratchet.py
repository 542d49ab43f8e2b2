"""The group key ratchet on an erasure (sync.ratchet, sync.hub.epochs), on SQLite and a real
PostgreSQL: the delta after an erasure carries no wraps and every member derives its key; a device
offline over several erasures catches up by ratcheting; a device removed from the group cannot
follow the ratchet (a membership change is a fresh random key); the hub keeps no key that opens a
bundle sealed before the erasure; a tampered ratchet announcement is refused by the signature."""

from __future__ import annotations

import base64
import json

import pytest

from bench.harness.sync_helpers import person
from sync import protocol, ratchet, sealing
from sync.bundle import MissingGroupKey, _content_aad, epoch_aad, open_bundle
from sync.groupkeys import GroupKeyFile
from sync.hub import epochs
from sync.hub.service import Hub, Outgoing
from sync.protocol import ReplayError, SignatureError
from sync.sealing import NotForThisKey
from tests.hub.test_deltas import SCOPE, TOPIC, Door, _staff


def _message(out: Outgoing) -> dict:
    return json.loads(out.payload)


def _opens(key: bytes, out: Outgoing) -> bool:
    """Whether `key` opens the sealed content of a bundle (a captured one, say)."""
    m = _message(out)
    try:
        sealing.open_with(key, base64.b64decode(m["sealed"]), _content_aad(SCOPE, m["seq"], m["epoch"]), "test")
    except NotForThisKey:
        return False
    return True


def _hub_keys(hub: Hub) -> list[bytes]:
    """Every group key the hub's database holds, unwrapped with its KEK."""
    out = []
    for epoch, blob in hub.store.db.execute("SELECT epoch, key_wrapped FROM group_epochs"):
        blob = bytes(blob)
        out.append(hub.store._kek.decrypt(blob[:12], blob[12:], epochs._aad(SCOPE, int(epoch))))
    return out


def _door_key(door: Door, epoch: int) -> bytes:
    eph, wrapped = door.keys.get(SCOPE, epoch)
    return sealing.unwrap_key(door.ident.sealing_key, door.name, eph, {door.name: wrapped}, epoch_aad(SCOPE, epoch))


def test_after_an_erasure_the_delta_carries_no_wraps_and_every_member_opens_it(hub: Hub, tmp_path) -> None:
    doors = [Door(hub, tmp_path, f"door-{i}") for i in range(3)]
    alice, *rest = _staff(hub, 6)
    [full] = hub.bundles(group="staff")
    for d in doors:
        d.receive(full)
    e0 = _message(full)["epoch"]
    old_key = _door_key(doors[0], e0)
    assert _opens(old_key, full) and old_key in _hub_keys(hub)
    hub.store.erase_person(alice)
    [delta] = hub.bundles(group="staff")
    m = _message(delta)
    assert delta.kind == "incremental" and m["recipients"] == {} and (m["epoch"], m["ratchet_base"]) == (e0 + 1, e0)
    for d in doors:
        d.receive(delta)
        assert alice not in d.uids() and len(d.uids()) == 5
        assert list(json.loads((d.data_dir / "group_keys.json").read_text())[SCOPE]) == [str(e0 + 1)]  # only the newest kept
    # The hub holds only the new epoch's key; it does not open the bundle sealed before the erasure,
    # and the old key is not derivable from it (HKDF is one-way; the old one is gone from the row).
    assert [r[0] for r in hub.store.db.execute("SELECT epoch FROM group_epochs WHERE scope=?", (SCOPE,))] == [e0 + 1]
    held = _hub_keys(hub)
    assert held == [ratchet.step(old_key, SCOPE, e0 + 1)] and old_key not in held
    assert not any(_opens(k, full) for k in held)
    # A later one-person change under the ratcheted epoch: still no wraps, still opened.
    _staff(hub, 1, start=40)
    [later] = hub.bundles(group="staff")
    assert _message(later)["recipients"] == {} and _message(later)["epoch"] == e0 + 1
    for d in doors:
        d.receive(later)
    # A full bundle (a resync) carries the ratcheted key wrapped to each member.
    [resync] = hub.bundles(group="staff", full=True)
    assert set(_message(resync)["recipients"]) == {d.name for d in doors}
    fresh = Door(hub, tmp_path, "door-fresh")
    with pytest.raises(NotForThisKey):  # joined after: the wraps above are not for it
        fresh.open(resync)


def test_a_device_offline_over_several_erasures_catches_up_by_ratcheting(hub: Hub, tmp_path) -> None:
    online, offline = Door(hub, tmp_path, "door-1"), Door(hub, tmp_path, "door-2")
    uids = _staff(hub, 8)
    [full] = hub.bundles(group="staff")
    for d in (online, offline):
        d.receive(full)
    e0 = _message(full)["epoch"]
    queued = []
    for uid in uids[:3]:
        hub.store.erase_person(uid)
        [delta] = hub.bundles(group="staff")
        assert _message(delta)["recipients"] == {}
        online.receive(delta)
        queued.append(delta)
    assert _message(queued[-1])["epoch"] == e0 + 3
    # Straight to the newest (a copy of its key file): three steps derived, only the newest kept.
    copy = GroupKeyFile(tmp_path / "copy.json")
    copy.put(SCOPE, e0, *offline.keys.get(SCOPE, e0))
    content = open_bundle(queued[-1].payload, TOPIC, hub.identity.signing_key.public_key(), offline.name, offline.ident.sealing_key, copy)
    assert len(content.erases) == 3 and copy.newest(SCOPE)[0] == e0 + 3 and copy.get(SCOPE, e0) is None
    assert GroupKeyFile(tmp_path / "copy.json").newest(SCOPE)[0] == e0 + 3
    # What the broker kept for the offline device, in order: each one a step.
    for delta in queued:
        offline.receive(delta)
    assert offline.uids() == online.uids() == sorted(uids[3:])
    assert offline.keys.newest(SCOPE)[0] == e0 + 3


def test_a_removed_device_cannot_follow_the_ratchet(hub: Hub, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    stays, leaves, missed = Door(hub, tmp_path, "door-1"), Door(hub, tmp_path, "door-2"), Door(hub, tmp_path, "door-3")
    uids = _staff(hub, 6)
    [full] = hub.bundles(group="staff")
    for d in (stays, leaves, missed):
        d.receive(full)
    e0 = _message(full)["epoch"]
    # The fresh epoch right after e0 in numbers (the clock held back), so that the removed device's
    # own ratchet from e0 reaches exactly the epochs that follow: it must still derive noise.
    monkeypatch.setattr(epochs.time, "time_ns", lambda: 0)
    hub.store.assign("door-2", ())
    _staff(hub, 1, start=50)
    [rotated] = hub.bundles(group="staff")
    fresh = _message(rotated)
    assert fresh["epoch"] == e0 + 1 and "ratchet_base" not in fresh and set(fresh["recipients"]) == {"door-1", "door-3"}
    stays.receive(rotated)  # door-3 misses it
    erased = []
    for uid in uids[:2]:
        hub.store.erase_person(uid)
        [delta] = hub.bundles(group="staff")
        erased.append(delta)
        stays.receive(delta)
    m = _message(erased[-1])
    assert (m["epoch"], m["ratchet_base"], m["recipients"]) == (e0 + 3, e0 + 1, {})
    with pytest.raises(MissingGroupKey):  # its key is of an older chain: it cannot derive, and the hub refuses its resync
        leaves.open(erased[-1])
    assert hub.resync("door-2", SCOPE) is None
    own = ratchet.forward(_door_key(leaves, e0), SCOPE, e0, e0 + 3)  # a device ignoring the announcement
    assert not _opens(own, erased[-1]) and not _opens(ratchet.forward(_door_key(leaves, e0), SCOPE, e0, e0 + 2), erased[0])
    # A member that missed the fresh key's delta asks for a resync, as before the ratchet.
    with pytest.raises(MissingGroupKey):
        missed.open(erased[0])
    missed.receive(hub.resync("door-3", SCOPE))
    assert missed.uids() == stays.uids() == sorted([*uids[2:], person(50).uid])


def test_a_tampered_ratchet_announcement_is_refused(hub: Hub, tmp_path) -> None:
    door = Door(hub, tmp_path, "door-1")
    alice, *_ = _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    hub.store.erase_person(alice)
    [delta] = hub.bundles(group="staff")
    m = _message(delta)
    for forged in (dict(m, ratchet_base=m["ratchet_base"] - 1), {k: v for k, v in m.items() if k != "ratchet_base"},
                   dict(m, epoch=m["epoch"] + 1), dict(m, ratchet_base=m["epoch"] + 5)):
        with pytest.raises(SignatureError):
            door.open(protocol.encode(forged))
    door.receive(delta)
    assert alice not in door.uids()


def test_a_bundle_from_before_the_erasure_replayed_is_a_replay_not_a_gap(hub: Hub, tmp_path) -> None:
    """Its epoch's key is deleted on the device (only the newest is kept), so it cannot be opened
    any more; given the applied seq, the device refuses it on its signed header as a replay (no resync)."""
    door = Door(hub, tmp_path, "door-1")
    alice, *_ = _staff(hub, 3)
    door.receive(hub.bundles(group="staff")[0])
    _staff(hub, 1, start=30)
    [before] = hub.bundles(group="staff")
    door.receive(before)
    hub.store.erase_person(alice)
    door.receive(hub.bundles(group="staff")[0])
    with pytest.raises(MissingGroupKey):
        door.open(before)
    with pytest.raises(ReplayError):
        open_bundle(before.payload, TOPIC, hub.identity.signing_key.public_key(), door.name, door.ident.sealing_key, door.keys, door.seq())
