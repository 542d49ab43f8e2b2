"""The hub's retention sweep: persons whose retention or validity ended, erased and pushed.

`HubRetention.tick()` (`hub serve` calls it every second) runs `sweep` at start and every
`[privacy] retention_sweep_s`: each live person that `RetentionPolicy.due` names (the same
function a device uses, edge/gallery/retention_policy.py) is crypto-erased as `admin person erase`
does (`HubStore.erase_person`: sealed row and wrapped key destroyed, an erasure owed to every
device), recorded in `hub_audit` (action `erase`, `by: retention`, the reason), and the erasure
is pushed in full bundles at once, as the admin's erase pushes it; each device's confirmation
arrives with its gallery ack (`admin person erasure-report`).

With `retention_from = "last_seen"` a person's last grant is the newest `decision` record naming
them that a device holding them sent (not one stamped in the hub's future); the hub is the one
place that sees them all.

`clock` is the wall clock the deadlines are compared with (tests pass their own).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.config import PrivacyConfig
from edge.errors import FacegateError
from edge.gallery.retention_policy import RetentionPolicy
from sync.hub.review import ReviewQueue
from sync.hub.store import HubStore

if TYPE_CHECKING:
    from sync.hub.service import Hub, HubService, Outgoing

log = logging.getLogger("facegate.hub")
CLOCK_SKEW_S = 300.0  # a device's audit time ahead of the hub's by more than this is not believed


def last_grant(store: HubStore, uid: str, now: float, groups: tuple[str, ...] | None = None) -> int | None:
    """Unix seconds of the newest grant a device audited for `uid`, or None. Only devices in one
    of `groups` (the person's: the devices that hold them) count, and no record stamped after
    `now` (+ CLOCK_SKEW_S): a device cannot keep someone forever with a grant from the future."""
    holders = None if groups is None else {d.id for d in store.devices() if set(d.groups) & set(groups)}
    rows = store.db.execute("SELECT device, ts_us, body FROM audit WHERE person_uid=? AND kind='decision' AND ts_us <= ? ORDER BY ts_us DESC",
                            (uid, int((now + CLOCK_SKEW_S) * 1_000_000)))
    return next((int(ts) // 1_000_000 for device, ts, body in rows
                 if (holders is None or device in holders) and json.loads(body).get("decision") == "grant"), None)


def due(store: HubStore, policy: RetentionPolicy, now: float) -> list[tuple[str, str]]:
    """(uid, reason) of every live person due for erasure at `now`."""
    found = []
    for uid, wrapped, sealed, created in store.db.execute("SELECT uid, wrapped_key, sealed, created FROM persons WHERE erased IS NULL ORDER BY uid"):
        profile = store._open_person(uid, wrapped, sealed).profile
        seen = last_grant(store, uid, now, profile.groups) if policy.basis == "last_seen" else None
        reason = policy.due(profile, int(created), seen, now)
        if reason is not None:
            found.append((str(uid), reason))
    return found


def sweep(store: HubStore, policy: RetentionPolicy, now: float) -> list[tuple[str, str]]:
    """Erases every due person, each recorded in hub_audit; returns (uid, reason) of each."""
    erased = due(store, policy, now)
    history = ReviewQueue(store)  # owns the hub_audit table
    for uid, reason in erased:
        store.erase_person(uid)
        history.record("erase", uid, {"by": "retention", "reason": reason, "devices": len(store.erasures(uid))})
        log.info("person %s erased on the hub: %s", uid, reason)
    return erased


class HubRetention:
    def __init__(self, hub: Hub, policy: RetentionPolicy, interval_s: float, publish: Callable[[Outgoing], object],
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.policy = policy
        self.interval_s = interval_s
        self.publish = publish  # one bundle out (`hub serve`: its own MQTT client, QoS 1)
        self.ready = ready  # False until the broker connection is up: a push then would go nowhere
        self.clock = clock
        self.monotonic = monotonic
        self.erased = 0
        self._next: float | None = None

    @classmethod
    def serving(cls, hub: Hub, privacy: PrivacyConfig, service: HubService) -> HubRetention:
        """`hub serve`'s: `[privacy]` of the hub's config, pushing on the service's MQTT client
        once it is connected."""
        return cls(hub, RetentionPolicy.of(privacy), privacy.retention_sweep_s,
                   lambda out: service.client.publish(out.topic, out.payload, qos=1), ready=service.connected.is_set)

    def tick(self) -> list[tuple[str, str]]:
        if not self.ready() or (self._next is not None and self.monotonic() < self._next):
            return []
        self._next = self.monotonic() + self.interval_s
        try:
            erased = sweep(self.hub.store, self.policy, self.clock())
        except FacegateError as exc:  # a busy or broken store: the next interval tries again
            log.error("hub retention sweep failed: %s", exc)
            return []
        if erased:
            self.erased += len(erased)
            for out in self.hub.bundles():  # the erases travel in every scope's full bundle
                self.publish(out)
        return erased
