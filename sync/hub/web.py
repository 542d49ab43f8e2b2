"""The hub's status snapshot: fleet, pending acks, erasures, alerts, last decisions (by uid).

Served as `/status.json` by the console (`sync.hub.console.fleet`) to signed-in users; the
console blanks the uids for viewers.
"""

from __future__ import annotations

import time
from typing import Any

from sync.hub.store import HubStore


def snapshot(store: HubStore, decisions: int = 20) -> dict[str, Any]:
    pending = store.pending_acks()
    fleet = []
    for d in store.devices():
        gallery = d.status.get("gallery") if isinstance(d.status.get("gallery"), dict) else {}
        fleet.append({"device": d.id, "groups": list(d.groups), "online": bool(d.status.get("online")), "last_seen": d.last_seen,
                      "gallery_version": gallery.get("version"), "persons": gallery.get("persons"), "audit_seq": d.audit_seq,
                      "queue": d.status.get("queue"), "pending": [f"{s} #{q}" for dev, s, q in pending if dev == d.id]})
    last = store.audit_query(kind="decision", limit=decisions)
    return {
        "generated": int(time.time()), "fleet": fleet,
        "pending_acks": [{"device": d, "scope": s, "seq": q} for d, s, q in pending],
        "erasures": [{"uid": u, "device": d, "confirmed": c} for u, d, _r, c in store.erasures() if c is None],
        "alerts": [{"at": a, "device": d, "problem": p} for a, d, p in store.alerts(20)],
        "decisions": [{"device": dev, "seq": r.seq, "ts_us": r.ts_us, "camera": r.body.get("camera"), "decision": r.body.get("decision"),
                       "person_uid": r.body.get("person_uid"), "score": r.body.get("score")} for dev, r in reversed(last)],
    }
