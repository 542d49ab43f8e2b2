"""`facegate admin review list|approve|reject|history`: the device uploads the hub held for an admin
(`sync.hub.review`; docs/hub.md, review). Registered by `sync.hub.cli.add_commands`."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.errors import FacegateError

Handler = Callable[[argparse.Namespace, Config], int]
Wrap = Callable[[Handler], Callable[[argparse.Namespace], int]]


def _queue(cfg: Config):
    from sync.hub.review import ReviewQueue
    from sync.hub.service import Hub

    return ReviewQueue(Hub(cfg.hub).store)


def _when(at: int | None) -> str:
    return datetime.datetime.fromtimestamp(at).isoformat(timespec="seconds") if at else "-"


def _reason_text(r: dict[str, Any]) -> str:
    if r["why"] == "same_name":
        return f"same name as {r['uid']}"
    if r["why"] == "close_face":
        return f"face close to {r['uid']} (score {r['score']:.3f} >= {r['threshold']:.3f})"
    return f"face not compared: model {r.get('model')} has no calibration"


def cmd_review_list(args: argparse.Namespace, cfg: Config) -> int:
    queue = _queue(cfg)
    rows = [{"id": e.id, "device": e.device, "uid": e.uid, "audit_seq": e.audit_seq, "created": e.created, "state": e.state,
             "reasons": list(e.reasons), "decided": e.decided, "outcome_uid": e.outcome_uid,
             "name": p.profile.name if p else None, "groups": list(p.profile.groups) if p else None,
             "model": p.model if p else None, "templates": len(p.embeddings) if p else None}
            for e, p in queue.items(args.all)]
    if args.json:
        print(json.dumps({"items": rows, "history": queue.history(args.history)}))
        return 0
    for r in rows:
        held = f"{r['name']!r} ({r['templates']} template(s) of {r['model']}, asks groups {','.join(r['groups']) or '-'})" if r["name"] is not None else ""
        print(f"#{r['id']:<5} {r['state']:<9} {r['device']:<20} {r['uid']} {_when(r['created'])} {held}")
        for reason in r["reasons"]:
            print(f"       {_reason_text(reason)}")
    if not rows:
        print("no review item" + ("" if args.all else " pending"))
    return 0


def cmd_review_history(args: argparse.Namespace, cfg: Config) -> int:
    rows = _queue(cfg).history(args.limit)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{_when(r['at'])} {r['action']:<14} {r['subject']:<34} {json.dumps(r['detail'])[:200]}")
    return 0


def cmd_review_approve(args: argparse.Namespace, cfg: Config) -> int:
    if bool(args.merge) == bool(args.as_new) or (args.name and not args.as_new):
        raise FacegateError("admin review approve: give --merge UID, or --as-new [--name NAME]")
    queue = _queue(cfg)
    if args.merge:
        uid = queue.approve_merge(args.id, args.merge, args.by)
        print(f"review #{args.id}: templates added to {uid} (its profile and groups kept); push to send it to the devices")
    else:
        uid = queue.approve_new(args.id, args.name, args.by)
        print(f"review #{args.id}: kept apart as person {uid}; push to send it to the devices")
    return 0


def cmd_review_reject(args: argparse.Namespace, cfg: Config) -> int:
    _queue(cfg).reject(args.id, args.by)
    print(f"review #{args.id}: rejected; the held upload is crypto-erased")
    return 0


def add_review_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    review = admin.add_parser("review", help="device uploads held for an admin: same name or face as someone on the hub").add_subparsers(
        dest="review_command", required=True)
    p = review.add_parser("list", help="pending review items and why each is held")
    p.add_argument("--all", action="store_true", help="also decided items")
    p.add_argument("--history", type=int, default=100, metavar="N", help="with --json: the last N hub_audit entries too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_review_list))
    p = review.add_parser("approve", help="into an existing person (--merge UID) or as a new one (--as-new [--name NAME])")
    p.add_argument("id", type=int)
    p.add_argument("--merge", default=None, metavar="UID", help="add the templates to this person (name or uid); its groups stay")
    p.add_argument("--as-new", action="store_true", help="keep it apart as a new person (groups capped to the device's enroll groups)")
    p.add_argument("--name", default=None, help="with --as-new: the new person's name (a duplicate is refused)")
    p.add_argument("--by", default="admin")
    p.set_defaults(func=run(cmd_review_approve))
    p = review.add_parser("reject", help="refuse it: the held upload is crypto-erased")
    p.add_argument("id", type=int)
    p.add_argument("--by", default="admin")
    p.set_defaults(func=run(cmd_review_reject))
    p = review.add_parser("history", help="the hub's own log: uploads taken or held, and each review decision")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_review_history))
