"""`facegate admin person erase | erasures | export | erasure-report`: answering a person (docs/privacy.md).

`erase UID_OR_NAME` crypto-erases on the hub (recorded in `hub_audit`, `by: admin`) and pushes
the erase to every device at once; `erasures [UID]` lists each device's confirmation.

`export UID_OR_NAME` prints, as JSON, what the hub holds about one person: the profile, consent
(given, time, text), where the enrollment came from (the device upload or the admin), the template
count and model, groups, validity and retention (with the deadline the sweep applies), the
devices holding them, every audit record the hub holds that names them, the hub's own actions
about them, and their erasures. Records are chosen by the uid column the hub fills at ingest
(`person_uid_of`), for the person's uid and the uids of uploads merged into them — nothing that
names someone else. An erased person (by uid) still exports their records and erasures.

`erasure-report UID` prints each device's confirmation of the erasure with its time.
Registered by `sync.hub.cli` under `admin person`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.errors import FacegateError
from edge.gallery.retention_policy import DAY_S, RetentionPolicy
from sync.hub.retention import last_grant
from sync.hub.review import ReviewQueue
from sync.hub.store import HubStore

Handler = Callable[[argparse.Namespace, Config], int]
Wrap = Callable[[Handler], Callable[[argparse.Namespace], int]]


def _hub(cfg: Config):  # noqa: ANN202 - sync.hub.service.Hub, imported late like sync.hub.cli does
    from sync.hub.service import Hub

    return Hub(cfg.hub)


def _store(cfg: Config) -> HubStore:
    return _hub(cfg).store


def cmd_person_erase(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.service import publish

    hub = _hub(cfg)
    uid = hub.store.erase_person(args.person)
    ReviewQueue(hub.store).record("erase", uid, {"by": "admin", "devices": len(hub.store.erasures(uid))})
    print(f"{uid}: crypto-erased on the hub; owed to {len(hub.store.erasures(uid))} device(s)")
    if not args.no_push:
        out = hub.bundles()
        publish(cfg.hub, out)
        print(f"pushed {len(out)} bundle(s) carrying the erase; `admin person erasure-report {uid}` shows each device's confirmation")
    return 0


def cmd_person_erasures(args: argparse.Namespace, cfg: Config) -> int:
    rows = [{"uid": u, "device": d, "requested": r, "confirmed": c} for u, d, r, c in _store(cfg).erasures(args.uid)]
    print(json.dumps(rows) if args.json else "\n".join(f"{r['uid']} {r['device']:<24} {'confirmed' if r['confirmed'] else 'PENDING'}" for r in rows))
    return 0


def _uid_row(store: HubStore, name_or_uid: str) -> tuple[str, int, int | None]:
    """(uid, created, erased) of a live person by name or uid, or of an erased one by uid."""
    rows = store.db.execute("SELECT uid, created, erased FROM persons WHERE uid=?", (name_or_uid,))
    if not rows:
        rows = store.db.execute("SELECT uid, created, erased FROM persons WHERE uid=?", (store.find_person(name_or_uid),))
    return str(rows[0][0]), int(rows[0][1]), rows[0][2]


def _profile(store: HubStore, uid: str, policy: RetentionPolicy, created: int) -> dict[str, Any]:
    rows = store.db.execute("SELECT wrapped_key, sealed FROM persons WHERE uid=? AND erased IS NULL", (uid,))
    person = store._open_person(uid, rows[0][0], rows[0][1])
    p = person.profile
    days = policy.days(p)
    start = p.consent_at if p.consent_at is not None else created
    seen = last_grant(store, uid, time.time(), p.groups) if policy.basis == "last_seen" else None
    base = max(start, seen or 0) if policy.basis == "last_seen" else start
    return {
        "name": p.name, "groups": list(p.groups),
        "consent": {"given": p.consent, "at": p.consent_at, "text": p.consent_text},
        "validity": {"valid_from": p.valid_from, "valid_until": p.valid_until},
        "retention": {"days": days, "from": policy.basis, "last_grant": seen, "erase_after": None if days is None else base + days * DAY_S},
        "created_by": p.created_by, "cards": list(p.cards), "pin": bool(p.pin_hash),
        "templates": {"count": len(person.embeddings), "model": person.model},
    }


def _aliases(store: HubStore, uid: str) -> list[str]:
    """`uid` and the upload uids merged into it (their devices' records name those)."""
    ReviewQueue(store)  # the reviews / uploads / hub_audit tables exist from here on
    merged = store.db.execute("SELECT uid FROM reviews WHERE outcome_uid=? AND state='merged' ORDER BY id", (uid,))
    return [uid] + [str(r[0]) for r in merged if r[0] != uid]


def _holding(store: HubStore, groups: list[str], sources: list[str]) -> list[dict[str, Any]]:
    acked = {(a[0], a[1]) for a in store.gallery_acks() if a[3]}
    out = []
    for d in store.devices():
        via = sorted(set(d.groups) & set(groups))
        if via or d.id in sources:
            out.append({"device": d.id, "groups": via, "enrolled_here": d.id in sources,
                        "bundle_acked": any((d.id, f"group:{g}") in acked for g in via)})
    return out


def person_export(store: HubStore, name_or_uid: str, policy: RetentionPolicy) -> dict[str, Any]:
    uid, created, erased = _uid_row(store, name_or_uid)
    uids = _aliases(store, uid)
    marks = ",".join("?" * len(uids))
    uploads = store.db.execute(f"SELECT device, uid, at, outcome, review_id FROM uploads WHERE uid IN ({marks}) ORDER BY at", tuple(uids))
    audit = store.db.execute(f"SELECT device, seq, ts_us, kind, body FROM audit WHERE person_uid IN ({marks}) ORDER BY ts_us, device, seq", tuple(uids))
    hub_audit = store.db.execute(f"SELECT at, action, subject, detail FROM hub_audit WHERE subject IN ({marks}) ORDER BY at", tuple(uids))
    profile = None if erased is not None else _profile(store, uid, policy, created)
    sources = [str(u[0]) for u in uploads]
    return {
        "uid": uid, "aliases": uids[1:], "created": created, "erased": erased, "profile": profile,
        "enrollment": {"created_by": profile["created_by"] if profile else None,
                       "uploads": [{"device": u[0], "uid": u[1], "at": u[2], "outcome": u[3], "review": u[4]} for u in uploads]},
        "devices": _holding(store, profile["groups"] if profile else [], sources) if erased is None else [],
        "audit": [{"device": r[0], "seq": r[1], "ts_us": r[2], "kind": r[3], "body": json.loads(r[4])} for r in audit],
        "hub_audit": [{"at": r[0], "action": r[1], "subject": r[2], "detail": json.loads(r[3])} for r in hub_audit],
        "erasures": erasure_report(store, uid)["devices"] if erased is not None else [],
    }


def erasure_report(store: HubStore, uid: str) -> dict[str, Any]:
    rows = store.db.execute("SELECT erased FROM persons WHERE uid=?", (uid,))
    if not rows:
        raise FacegateError(f"no person {uid!r} on this hub, erased or not (admin person list --all)")
    ReviewQueue(store)
    why = store.db.execute("SELECT at, detail FROM hub_audit WHERE subject=? AND action='erase' ORDER BY at DESC", (uid,))
    devices = [{"device": d, "requested": r, "confirmed": c, "status": "confirmed" if c is not None else "pending"} for _u, d, r, c in store.erasures(uid)]
    return {
        "uid": uid, "erased": rows[0][0], "by": json.loads(why[0][1]) if why else None, "devices": devices,
        "complete": rows[0][0] is not None and all(d["confirmed"] is not None for d in devices),
    }


def cmd_person_export(args: argparse.Namespace, cfg: Config) -> int:
    print(json.dumps(person_export(_store(cfg), args.person, RetentionPolicy.of(cfg.privacy)), indent=2))
    return 0


def cmd_person_erasure_report(args: argparse.Namespace, cfg: Config) -> int:
    store = _store(cfg)
    report = erasure_report(store, _uid_row(store, args.person)[0])
    print(json.dumps(report, indent=2))
    return 0 if report["complete"] else 1


def add_privacy_commands(person: argparse._SubParsersAction, run: Wrap) -> None:
    p = person.add_parser("erase", help="crypto-erase on the hub and on every device (pushed now, confirmed per device)")
    p.add_argument("person", help="name or uid")
    p.add_argument("--no-push", action="store_true")
    p.set_defaults(func=run(cmd_person_erase))
    p = person.add_parser("erasures", help="each device's confirmation of each erasure")
    p.add_argument("uid", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_person_erasures))
    p = person.add_parser("export", help="subject access: everything the hub holds about one person, as JSON (docs/privacy.md)")
    p.add_argument("person", help="name or uid (an erased person: uid)")
    p.set_defaults(func=run(cmd_person_export))
    p = person.add_parser("erasure-report", help="each device's confirmation of a person's erasure, with times, as JSON (exit 1 until complete)")
    p.add_argument("person", help="uid (or the name of a person not yet erased)")
    p.set_defaults(func=run(cmd_person_erasure_report))
