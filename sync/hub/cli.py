"""`facegate admin ...` (the fleet, persons, pushes, the audit trail) and `facegate hub serve|identity`.

The admin commands work on the hub's store directly (`[hub] data_dir` / `database` and the hub
keys), and `push` / `person erase` publish the signed bundles themselves; `hub serve` is the
long-running side that ingests what devices send. See docs/hub.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.errors import FacegateError
from edge.gallery.records import PersonProfile, new_uid
from edge.names import check_names
from edge.perception.photos import images_in, person_folders, photo_template
from sync.hub.cli_audit import add_verify_prune_commands
from sync.hub.cli_keys import add_key_commands
from sync.hub.cli_privacy import add_privacy_commands
from sync.hub.cli_review import add_review_commands
from sync.hub.console.cli import add_user_commands

Handler = Callable[[argparse.Namespace, Config], int]
Wrap = Callable[[Handler], Callable[[argparse.Namespace], int]]  # a handler wrapped with config loading


def _hub(cfg: Config):
    from sync.hub.service import Hub

    return Hub(cfg.hub)


def _progress(done: int, total: int, rejected: int) -> None:
    filled = int(30 * done / max(total, 1))
    print(f"\r[{'#' * filled}{'-' * (30 - filled)}] {done}/{total} people, {rejected} photo(s) rejected", end="", file=sys.stderr, flush=True)


def cmd_device_add(args: argparse.Namespace, cfg: Config) -> int:
    sign, seal = args.sign_key, args.seal_key
    if args.identity is not None:  # the JSON `facegate sync identity` prints on the device
        ident = json.loads(Path(args.identity).read_text())
        sign, seal = ident["sign_public_key"], ident["seal_public_key"]
    if not sign or not seal:
        raise FacegateError("admin device add: give --identity FILE or both --sign-key and --seal-key")
    hub = _hub(cfg)
    enroll = None if args.enroll_groups is None else tuple(g for g in args.enroll_groups.split(",") if g)
    hub.store.add_device(args.device, sign, seal, tuple(args.group or ()), enroll)
    print(f"device {args.device} registered (groups: {','.join(args.group or ()) or '-'}; enroll groups: {','.join(hub.store.device(args.device).enroll_groups) or '-'})")
    return 0


def _device_rows(cfg: Config) -> list[dict[str, object]]:
    hub = _hub(cfg)
    pending = hub.store.pending_acks()
    rows = []
    for d in hub.store.devices():
        gallery = d.status.get("gallery", {}) if isinstance(d.status.get("gallery"), dict) else {}
        rows.append({
            "device": d.id, "groups": list(d.groups), "online": bool(d.status.get("online", False)), "last_seen": d.last_seen,
            "gallery_version": gallery.get("version"), "persons": gallery.get("persons"), "audit_seq": d.audit_seq,
            "queue": d.status.get("queue"), "pending_acks": [f"{s}#{q}" for dev, s, q in pending if dev == d.id],
        })
    return rows


def cmd_device_list(args: argparse.Namespace, cfg: Config) -> int:
    rows = _device_rows(cfg)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['device']:<24} groups: {','.join(r['groups']) or '-':<20} {'online' if r['online'] else 'offline':<8} "  # type: ignore[arg-type]
                  f"gallery v{r['gallery_version']}  audit #{r['audit_seq']}  pending: {','.join(r['pending_acks']) or '-'}")  # type: ignore[arg-type]
    return 0


def cmd_device_status(args: argparse.Namespace, cfg: Config) -> int:
    rows = [r for r in _device_rows(cfg) if r["device"] == args.device]
    if not rows:
        raise FacegateError(f"no device {args.device!r} on this hub")
    hub = _hub(cfg)
    rows[0]["status"] = hub.store.device(args.device).status
    rows[0]["gallery_acks"] = [dict(zip(("device", "scope", "seq", "ok", "gallery_version", "error", "at"), a, strict=False)) for a in hub.store.gallery_acks(args.device)[-10:]]
    print(json.dumps(rows[0], indent=None if args.json else 2))
    return 0


def cmd_group_add(args: argparse.Namespace, cfg: Config) -> int:
    _hub(cfg).store.add_group(args.group)
    print(f"group {args.group} added")
    return 0


def cmd_group_assign(args: argparse.Namespace, cfg: Config) -> int:
    store = _hub(cfg).store
    groups = set(store.device(args.device).groups)
    groups = groups - {args.group} if args.remove else groups | {args.group}
    store.assign(args.device, tuple(sorted(groups)))
    print(f"device {args.device}: groups {','.join(sorted(groups)) or '-'}")
    return 0


def cmd_person_add(args: argparse.Namespace, cfg: Config) -> int:
    from edge.gallery.changes import SyncPerson
    from edge.perception.faces import Perception, embedder_model_name

    if bool(args.photos) == bool(args.from_dir) or (args.photos and not args.name):
        raise FacegateError("admin person add: give NAME --photos DIR, or --from-dir DIR (DIR/<Name>/*.jpg)")
    jobs = [(args.name, images_in(args.photos))] if args.photos else list(person_folders(args.from_dir))
    check_names((name for name, _ in jobs), "admin person add")  # before a model loads or anyone is added
    perception, hub = Perception(cfg), _hub(cfg)
    model = embedder_model_name(cfg)
    report, rejected = [], 0
    for done, (name, photos) in enumerate(jobs, 1):
        results = [photo_template(perception, p) for p in photos]
        good = [r for r in results if r.accepted and r.embedding is not None]
        rejected += len(results) - len(good)
        entry: dict[str, object] = {"person": name, "photos": [r.to_dict() for r in results], "uid": None, "error": None}
        if good:
            profile = PersonProfile(name=name, groups=tuple(args.group or ()), consent_at=int(time.time()), consent_text=args.consent_text, created_by=args.by)
            person = SyncPerson(new_uid(), profile, model, tuple(r.embedding for r in good), tuple(r.quality or 0.0 for r in good))  # type: ignore[misc]
            try:
                hub.store.add_person(person)
                entry["uid"] = person.uid
            except FacegateError as exc:
                entry["error"] = str(exc)
        else:
            entry["error"] = "no usable photo"
        report.append(entry)
        if not args.json:
            _progress(done, len(jobs), rejected)
    if args.json:
        print(json.dumps(report))
    else:
        print(file=sys.stderr)
        for e in report:
            kept = sum(p["accepted"] for p in e["photos"])  # type: ignore[union-attr, index]
            print(f"{e['person']}: " + (f"enrolled {e['uid']}, {kept} template(s)" if e["uid"] else f"NOT enrolled: {e['error']}"))
            for p in e["photos"]:  # type: ignore[union-attr]
                if not p["accepted"]:
                    print(f"  rejected {p['file']}: {p['reason']}")
    return 0 if all(e["uid"] for e in report) else 1


def cmd_person_list(args: argparse.Namespace, cfg: Config) -> int:
    rows = [{"uid": p.uid, "person": p.name, "groups": list(p.groups), "templates": p.templates, "created": p.created, "erased": p.erased}
            for p in _hub(cfg).store.person_entries() if args.all or p.erased is None]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            what = "ERASED" if r["erased"] else f"{r['person']:<32} {r['templates']:>3} template(s)"
            print(f"{r['uid']}  {what}  groups: {','.join(r['groups']) or '-'}")  # type: ignore[arg-type]
    return 0


def cmd_person_remove(args: argparse.Namespace, cfg: Config) -> int:
    uid = _hub(cfg).store.remove_person(args.person)
    print(f"{uid}: removed from the hub; devices drop it on the next push")
    return 0


def cmd_push(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.service import publish

    hub = _hub(cfg)
    out = hub.bundles(group=args.group, device=args.device, full=args.full)
    publish(cfg.hub, out)
    rows = [{"scope": o.scope, "seq": o.seq, "kind": o.kind, "persons": o.persons, "devices": list(o.recipients), "bytes": len(o.payload)} for o in out]
    print(json.dumps(rows) if args.json else "\n".join(f"{r['scope']} seq {r['seq']} {r['kind']}: {r['persons']} person(s) → {','.join(r['devices'])}" for r in rows))
    return 0


def _since(text: str | None) -> int:
    if not text:
        return 0
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise FacegateError(f"--since {text!r}: unix seconds or an ISO date/time (2026-11-23T08:00)") from exc
    return int(moment.timestamp() * 1_000_000)


def cmd_audit_query(args: argparse.Namespace, cfg: Config) -> int:
    store = _hub(cfg).store
    uid = store.find_person(args.person) if args.person else None
    rows = store.audit_query(args.device, uid, _since(args.since), args.kind, args.limit)
    if args.json:
        print(json.dumps([{"device": d, **r.to_dict()} for d, r in rows]))
    else:
        for d, r in rows:
            when = datetime.datetime.fromtimestamp(r.ts_us / 1e6).isoformat(timespec="seconds")
            print(f"{when} {d:<20} #{r.seq:<6} {r.kind:<16} {json.dumps(r.body)[:160]}")
    return 0


def cmd_hub_serve(args: argparse.Namespace, cfg: Config) -> int:
    import logging

    from sync.hub.retention import HubRetention
    from sync.hub.service import HubService

    try:
        from sync.hub.console.server import ConsoleServer
    except ImportError as exc:  # the `hub` extra; only the console needs it
        if cfg.hub.web_port:
            raise FacegateError(f"hub.web_port: the console needs the hub extra (pip install 'facegate[hub]'): {exc}") from exc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    hub = _hub(cfg)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    web = ConsoleServer(cfg, hub) if cfg.hub.web_port else None  # a console it may not serve (no TLS off loopback) stops here
    service = HubService(hub).start()
    retention = HubRetention.serving(hub, cfg.privacy, service)  # due persons erased and pushed (docs/privacy.md)
    if web is not None:
        web.start()
    print(f"facegate hub: {service.client_id} → {cfg.hub.broker_host}:{cfg.hub.broker_port}" + (f", console {web.url}" if web else ""), file=sys.stderr, flush=True)
    code = 0
    try:
        while not stop.wait(1.0):
            if not service.alive():
                # paho's network thread is gone: a hub that runs on without it handles nothing,
                # so exit non-zero and let systemd (Restart=on-failure) start a fresh one.
                print("facegate hub: the MQTT network thread died; exiting so the service manager restarts the hub", file=sys.stderr, flush=True)
                code = 3
                break
            service.tick()
            retention.tick()
    finally:
        service.stop()
        if web is not None:
            web.stop()
        hub.close()
    return code


def add_commands(sub: argparse._SubParsersAction, run: Wrap) -> None:
    """Registers `admin` and `hub`; `run(handler)` wraps a handler with config loading."""
    admin = sub.add_parser("admin", help="the hub's fleet, persons, pushes and audit trail ([hub] config)").add_subparsers(dest="admin_command", required=True)
    _add_device_commands(admin, run)
    _add_group_commands(admin, run)
    _add_person_commands(admin, run)
    _add_push_command(admin, run)
    _add_audit_commands(admin, run)
    add_review_commands(admin, run)
    add_user_commands(admin, run)
    _add_hub_commands(sub, run)


def _add_device_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    device = admin.add_parser("device", help="register and inspect devices").add_subparsers(dest="device_command", required=True)
    p = device.add_parser("add", help="register a device's public keys (from `facegate sync identity`)")
    p.add_argument("device")
    p.add_argument("--identity", type=Path, default=None, help="the JSON `facegate sync identity` printed")
    p.add_argument("--sign-key", default="")
    p.add_argument("--seal-key", default="")
    p.add_argument("--group", action="append")
    p.add_argument("--enroll-groups", default=None, metavar="G1,G2", help="most groups a person this device enrolls gets (default none; kept on re-add)")
    p.set_defaults(func=run(cmd_device_add))
    for name, handler, text in (("list", cmd_device_list, "every device: groups, online, gallery version, pending acks"),
                                ("status", cmd_device_status, "one device's last status and gallery acks")):
        p = device.add_parser(name, help=text)
        if name == "status":
            p.add_argument("device")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=run(handler))


def _add_group_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    group = admin.add_parser("group", help="device groups").add_subparsers(dest="group_command", required=True)
    p = group.add_parser("add")
    p.add_argument("group")
    p.set_defaults(func=run(cmd_group_add))
    p = group.add_parser("assign", help="put a device in a group (its [sync] groups must list it too)")
    p.add_argument("group")
    p.add_argument("--device", required=True)
    p.add_argument("--remove", action="store_true", help="take the device out of the group instead")
    p.set_defaults(func=run(cmd_group_assign))


def _add_person_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    person = admin.add_parser("person", help="persons on the hub (encrypted at rest)").add_subparsers(dest="person_command", required=True)
    p = person.add_parser("add", help="enroll NAME from --photos DIR, or everyone in --from-dir DIR/<Name>/*.jpg")
    p.add_argument("name", nargs="?")
    p.add_argument("--photos", type=Path, default=None)
    p.add_argument("--from-dir", type=Path, default=None)
    p.add_argument("--group", action="append")
    p.add_argument("--consent-text", default="")
    p.add_argument("--by", default="admin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_person_add))
    p = person.add_parser("list")
    p.add_argument("--all", action="store_true", help="also list erased uids")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_person_list))
    p = person.add_parser("remove", help="delete from the hub; devices drop it on the next push")
    p.add_argument("person", help="name or uid")
    p.set_defaults(func=run(cmd_person_remove))
    add_privacy_commands(person, run)  # erase, erasures, export, erasure-report (sync/hub/cli_privacy.py)


def _add_push_command(admin: argparse._SubParsersAction, run: Wrap) -> None:
    p = admin.add_parser("push", help="sign and publish bundles (the changes since the last one, or full): every group (default), one group or one device")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--group", default=None)
    target.add_argument("--device", default=None)
    p.add_argument("--full", action="store_true", help="full bundles even where the devices could take a delta")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_push))


def _add_audit_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    audit = admin.add_parser("audit", help="the devices' audit records as the hub stored them").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("query")
    p.add_argument("--device", default=None)
    p.add_argument("--person", default=None, help="name or uid (records name persons by uid)")
    p.add_argument("--since", default=None, help="unix seconds or ISO time")
    p.add_argument("--kind", default=None, help="decision, enroll, gallery_update, ...")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_audit_query))
    add_verify_prune_commands(audit, run)  # verify, prune (sync/hub/cli_audit.py)


def _add_hub_commands(sub: argparse._SubParsersAction, run: Wrap) -> None:
    hub = sub.add_parser("hub", help="the hub service ([hub] config)").add_subparsers(dest="hub_command", required=True)
    p = hub.add_parser("serve", help="ingest audit, enrollments, gallery acks and resyncs until SIGTERM")
    p.set_defaults(func=run(cmd_hub_serve), long_running=True)  # core dumps off before a key is read (edge/service/hardening.py)
    add_key_commands(hub, run)  # identity, signing keys, KEK (sync/hub/cli_keys.py)
