"""`facegate gallery reject-match | negatives | status`: "not this person", and what the gallery holds.

`reject-match EVENT_ID` turns the kept probe of a wrong match into a negative template of the
person it was matched to (edge/gallery/negatives.py); a running daemon picks it up within a
second (its `probes` observer watches the negatives), a daemon started later loads it at open.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge.audit.journal import AuditLog
from edge.cli.audit import record_event
from edge.cli.common import Handler
from edge.config import Config
from edge.errors import AuditError, FacegateError
from edge.gallery import negatives
from edge.gallery.keys import data_dir_for, load_key
from edge.gallery.negatives import RejectError
from edge.gallery.reject_match import reject_match
from edge.gallery.store import GalleryStore


def _store(data_dir: Path, cfg: Config) -> GalleryStore:
    return GalleryStore.open(data_dir, load_key(data_dir, cfg, create=False).kek)


def _audited_decision(data_dir: Path, event_id: str) -> dict[str, object] | None:
    try:
        with AuditLog.open(data_dir, create=False) as log:
            return log.find_decision(event_id)
    except AuditError:  # no journal here: nothing was ever decided in this data dir
        return None


def _reject(args: argparse.Namespace, cfg: Config, data_dir: Path) -> tuple[negatives.Rejected, str]:
    match = cfg.match
    with _store(data_dir, cfg) as store:
        done = reject_match(store, args.event_id, match.keep_probes_h, match.keep_probes_max, lambda e: _audited_decision(data_dir, e))
        person = store.person(done.person_id)
    return done, person.profile.name if person is not None else done.person_uid


def cmd_reject_match(args: argparse.Namespace, cfg: Config) -> int:
    data_dir = data_dir_for(args.data_dir, cfg)
    try:
        done, name = _reject(args, cfg, data_dir)
    except RejectError as exc:
        if args.json:
            print(json.dumps({"error": exc.code, "message": str(exc)}))
        raise
    if not done.already:
        record_event(data_dir, "match_rejected", {"event_id": done.event_id, "person_uid": done.person_uid,
                                                  "negative_uid": done.negative_uid, "negatives": done.negatives, "by": "cli"})
    if args.json:
        print(json.dumps({**done.to_dict(), "person": name}))
    elif done.already:
        print(f"decision {done.event_id} was already rejected: {name} has {done.negatives} negative template(s)")
    else:
        print(f"decision {done.event_id}: that face is now a negative template of {name} ({done.negatives} in all); "
              "a running daemon applies it within a second")
    return 0


def cmd_negatives(args: argparse.Namespace, cfg: Config) -> int:
    if args.uid and not args.clear:
        raise FacegateError("gallery negatives: --uid only goes with --clear")
    data_dir = data_dir_for(args.data_dir, cfg)
    with _store(data_dir, cfg) as store:
        record = store.find(args.person)
        if record is None:
            raise FacegateError(f"gallery negatives: no person named {args.person!r} in the gallery")
        cleared = negatives.clear_negatives(store, record.id, args.uid) if args.clear else 0
        rows = negatives.list_negatives(store, record.id)
    if args.clear:
        if args.uid and not cleared:
            raise FacegateError(f"gallery negatives: {record.profile.name} has no negative {args.uid!r}; see `facegate gallery negatives NAME`")
        record_event(data_dir, "negatives_cleared", {"person_uid": record.uid, "cleared": cleared, "by": "cli"})
    listed = [{"uid": n.uid, "event_id": n.event_id, "model": n.model, "created": n.created} for n in rows]
    if args.json:
        print(json.dumps({"person": record.profile.name, "cleared": cleared, "negatives": listed}))
        return 0
    if args.clear:
        print(f"{record.profile.name}: {cleared} negative template(s) cleared")
    for n in listed:
        print(f"  {n['uid']}  from decision {n['event_id']}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(int(n['created'])))}")  # type: ignore[call-overload]
    print(f"{record.profile.name}: {len(listed)} negative template(s)", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace, cfg: Config) -> int:
    data_dir = data_dir_for(args.data_dir, cfg)
    with _store(data_dir, cfg) as store:
        status = {"data_dir": str(data_dir), **store.status()}
    match = cfg.match
    status["keep_probes"] = {"hours": match.keep_probes_h, "max": match.keep_probes_max, "on": match.keep_probes_h > 0}
    status["negative_margin"] = match.negative_margin
    print(json.dumps(status, indent=None if args.json else 2))
    return 0


def add_commands(gallery: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]],
                 common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Registers the verbs under `facegate gallery`; `common` adds --data-dir and --json."""
    p = common(gallery.add_parser("reject-match", help="a wrong match: that decision's face becomes a negative template of the person"))
    p.add_argument("event_id", metavar="EVENT_ID", help="the decision's event_id (events output, ZeroMQ, MQTT, audit)")
    p.set_defaults(func=run(cmd_reject_match))
    p = common(gallery.add_parser("negatives", help="a person's negative templates (from reject-match); --clear undoes them"))
    p.add_argument("person", metavar="NAME")
    p.add_argument("--clear", action="store_true", help="delete the person's negatives (all, or --uid)")
    p.add_argument("--uid", default=None, help="with --clear: only this negative")
    p.set_defaults(func=run(cmd_negatives))
    p = common(gallery.add_parser("status", help="what the gallery holds: persons, templates, negatives, kept probes, files"))
    p.set_defaults(func=run(cmd_status))
