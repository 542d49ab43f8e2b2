"""The hub's retention sweep without a broker (sync/hub/retention.py): with retention_from =
"last_seen" the last grant comes from the audit records of devices holding the person, never from
a device outside their groups nor from a record stamped in the hub's future; a due person is
erased like `admin person erase` (owed to every device) and recorded in hub_audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.config import HubConfig
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile, new_uid
from edge.gallery.retention_policy import DAY_S, RetentionPolicy
from sync.hub.retention import due, last_grant, sweep
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub

T0 = 1_780_000_000


def _audit(hub: Hub, device: str, seq: int, at: float, uid: str, decision: str) -> None:
    # Stored as ingest stores it (the chain is ingest's concern, tested in tests/hub/test_store.py).
    body = json.dumps({"decision": decision, "person_uid": uid})
    hub.store.db.execute("INSERT INTO audit VALUES (?, ?, ?, 'decision', ?, '', '', '', ?)", (device, seq, int(at * 1_000_000), body, uid))


def test_last_seen_counts_only_believable_grants_and_the_sweep_erases(tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    try:
        hub.store.add_device("shop-1", "00" * 32, "00" * 32, ("shop",))
        hub.store.add_device("lab-1", "00" * 32, "00" * 32, ("lab",))
        person = SyncPerson(new_uid(), PersonProfile("Regular", groups=("shop",), consent_at=T0, retention_days=1), "m", (np.ones(8, np.float32),), (1.0,))
        stays = SyncPerson(new_uid(), PersonProfile("Staff", groups=("shop",), consent_at=T0), "m", (np.full(8, 2.0, np.float32),), (1.0,))
        hub.store.add_person(person)
        hub.store.add_person(stays)
        uid = person.uid
        _audit(hub, "shop-1", 1, T0 + 3 * DAY_S, uid, "grant")
        _audit(hub, "shop-1", 2, T0 + 3.2 * DAY_S, uid, "deny")  # a deny is no visit
        _audit(hub, "lab-1", 1, T0 + 3.9 * DAY_S, uid, "grant")  # lab-1 does not hold them
        _audit(hub, "shop-1", 3, T0 + 90 * DAY_S, uid, "grant")  # stamped in the hub's future
        now = T0 + 4.1 * DAY_S
        assert last_grant(hub.store, uid, now, ("shop",)) == T0 + 3 * DAY_S
        assert last_grant(hub.store, uid, now) == int(T0 + 3.9 * DAY_S)  # any holder
        seen = RetentionPolicy("last_seen")
        assert due(hub.store, seen, T0 + 3.9 * DAY_S) == []
        assert due(hub.store, RetentionPolicy(), T0 + 3.9 * DAY_S) == [(uid, "retention")]  # from enrollment: long due
        assert sweep(hub.store, seen, now) == [(uid, "retention")]
        assert [p.uid for p in hub.store.persons()] == [stays.uid]
        assert sorted(d for _u, d, _r, c in hub.store.erasures(uid) if c is None) == ["lab-1", "shop-1"]
        [entry] = [h for h in ReviewQueue(hub.store).history() if h["subject"] == uid]
        assert (entry["action"], entry["detail"]) == ("erase", {"by": "retention", "reason": "retention", "devices": 2})
        assert sweep(hub.store, seen, now + DAY_S) == []  # erased once
    finally:
        hub.close()
