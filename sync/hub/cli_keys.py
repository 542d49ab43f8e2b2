"""`facegate hub identity | rotate-signing-key | revoke-signing-key | signing-keys | rotate-kek`:
the hub's keys (`sync.hub.keys`, `sync.hub.kek`; docs/hub.md, keys). Registered by `sync.hub.cli`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edge.config import Config, HubConfig

Handler = Callable[[argparse.Namespace, Config], int]
Wrap = Callable[[Handler], Callable[[argparse.Namespace], int]]


def publish_retained(cfg: HubConfig, topic: str, payload: bytes, timeout: float = 30.0) -> None:
    """One retained QoS 1 message, returned once the broker has it (PUBACK)."""
    from sync.hub.service import publish_raw

    publish_raw(cfg, [(topic, payload)], timeout, retain=True, name="keys")


def _hub(cfg: Config):
    from sync.hub.service import Hub

    return Hub(cfg.hub)


def cmd_hub_identity(args: argparse.Namespace, cfg: Config) -> int:
    keys = _hub(cfg).public_keys()  # the CURRENT signing key: what a device provisioned now must trust
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "hub_sign.pub").write_text(keys["hub_sign_key"] + "\n")
        (args.write / "hub_seal.pub").write_text(keys["hub_seal_key"] + "\n")
    print(json.dumps(keys))
    return 0


def cmd_rotate_signing_key(args: argparse.Namespace, cfg: Config) -> int:
    hub = _hub(cfg)
    keys = hub.signing_keys
    _new, announcement = keys.prepare_rotation(args.revoke_old)
    try:
        publish_retained(cfg.hub, announcement.topic, announcement.payload)
    except BaseException:
        keys.abandon(announcement)  # no device heard of it: the hub keeps signing with the old key
        raise
    keys.commit(announcement)
    print(json.dumps({"new_key_id": announcement.new_key_id, "signed_by": announcement.signed_by, "revoked": list(announcement.revoke),
                      "topic": announcement.topic}))
    if not args.revoke_old:
        print(f"devices trust {announcement.new_key_id} as they receive it; once every device audited it, run "
              f"`facegate hub revoke-signing-key {announcement.signed_by}`", flush=True)
    return 0


def cmd_revoke_signing_key(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.keys import HubKeyError, devices_without_key

    hub = _hub(cfg)
    keys = hub.signing_keys
    missing = devices_without_key(hub.store, keys.current_id)
    if missing and not args.force:
        raise HubKeyError(f"device(s) {', '.join(missing)} have not audited trusting the current key {keys.current_id}: revoking "
                          f"{args.key_id} now would strand them (they would refuse every bundle); wait for them, or --force")
    announcement = keys.prepare_revocation(args.key_id)
    publish_retained(cfg.hub, announcement.topic, announcement.payload)
    keys.commit_revocation(announcement)
    print(json.dumps({"revoked": list(announcement.revoke), "signed_by": announcement.signed_by, "topic": announcement.topic}))
    return 0


def cmd_signing_keys(args: argparse.Namespace, cfg: Config) -> int:
    keys = _hub(cfg).signing_keys
    if args.republish:
        for a in keys.announcements():
            publish_retained(cfg.hub, a.topic, a.payload)
    print(json.dumps([{"key_id": e.key_id, "state": e.state, "created": e.created, "file": e.file} for e in keys.entries()]))
    return 0


def cmd_rotate_kek(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.db import HubDb
    from sync.hub.kek import finish_interrupted, rotate_kek

    data_dir = Path(cfg.hub.data_dir)
    key_path = Path(cfg.hub.key_file) if cfg.hub.key_file else data_dir / "hub.key"
    db = HubDb(cfg.hub.database, data_dir / "hub.db")
    try:
        settled = finish_interrupted(key_path, db)
    finally:
        db.close()
    if settled:
        print(f"interrupted KEK rotation {settled}", flush=True)
    hub = _hub(cfg)
    try:
        result = rotate_kek(hub.store, key_path)
    finally:
        hub.close()
    print(json.dumps({"old_kek_id": result.old_id, "new_kek_id": result.new_id, "persons": result.persons, "reviews": result.reviews,
                      "key_file": str(key_path)}))
    return 0


def add_key_commands(hub: argparse._SubParsersAction, run: Wrap) -> None:
    p = hub.add_parser("identity", help="print the hub's public keys (devices' hub_sign_key_file / hub_seal_key_file)")
    p.add_argument("--write", type=Path, default=None, metavar="DIR", help="also write DIR/hub_sign.pub and DIR/hub_seal.pub")
    p.set_defaults(func=run(cmd_hub_identity))
    p = hub.add_parser("rotate-signing-key", help="new hub signing key, announced to devices signed by the current one (retained)")
    p.add_argument("--revoke-old", action="store_true", help="the announcement also revokes the old key at once (devices drop it on receipt)")
    p.set_defaults(func=run(cmd_rotate_signing_key))
    p = hub.add_parser("revoke-signing-key", help="devices drop a retired hub signing key for good (signed by the current key)")
    p.add_argument("key_id")
    p.add_argument("--force", action="store_true", help="even if some device has not audited trusting the current key")
    p.set_defaults(func=run(cmd_revoke_signing_key))
    p = hub.add_parser("signing-keys", help="the hub's signing keys: current, retired, revoked")
    p.add_argument("--republish", action="store_true", help="publish every retained key announcement again (a broker that lost them)")
    p.set_defaults(func=run(cmd_signing_keys))
    p = hub.add_parser("rotate-kek", help="re-wrap every person and review key under a new KEK, then replace the key file")
    p.set_defaults(func=run(cmd_rotate_kek))
