"""`facegate admin audit verify|prune`: re-check every device's stored chain (from its hub-signed
checkpoint once pruned) and prune by `[hub] audit_retention_days` (docs/audit.md#retention)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from edge.config import Config

Handler = Callable[[argparse.Namespace, Config], int]


def _hub(cfg: Config) -> Any:
    from sync.hub.service import Hub

    return Hub(cfg.hub)


def cmd_audit_verify(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.audit_prune import pruned_counts
    from sync.hub.verify import verify_device_chain

    hub = _hub(cfg)
    store, keys, results = hub.store, hub.signing_keys.public_keys(), []
    pruned = pruned_counts(store.db)  # vouched for by the checkpoint that verify_device_chain checks
    for d in store.devices():
        if args.device and d.id != args.device:
            continue
        checked, problem = verify_device_chain(store, d.id, d.sign_pub, keys)
        results.append({"device": d.id, "records": checked, "pruned": pruned.get(d.id, 0), "ok": not problem, "problem": problem or None})
    alerts = [{"at": a[0], "device": a[1], "problem": a[2]} for a in store.alerts()]
    if args.json:
        print(json.dumps({"devices": results, "alerts": alerts}))
    else:
        for r in results:
            print(f"{r['device']:<24} {r['records']:>8} record(s), {r['pruned']} pruned  " + ("ok" if r["ok"] else f"BROKEN: {r['problem']}"))
        for a in alerts:
            print(f"alert {a['device']}: {a['problem']}")
    return 0 if all(r["ok"] for r in results) else 1


def cmd_audit_prune(args: argparse.Namespace, cfg: Config) -> int:
    from sync.hub.audit_prune import prune_all

    hub, days = _hub(cfg), cfg.hub.audit_retention_days if args.days is None else args.days
    print(json.dumps({"pruned": prune_all(hub.store, hub.identity.signing_key, hub.signing_keys.public_keys(), days)}))
    return 0


def add_verify_prune_commands(audit: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    p = audit.add_parser("verify", help="re-check every stored chain and signature (from the hub-signed checkpoint once pruned); list alerts (exit 1 on a break)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_audit_verify))
    p = audit.add_parser("prune", help="delete records older than [hub] audit_retention_days (or --days) behind a hub-signed checkpoint")
    p.add_argument("--days", type=int, default=None)
    p.set_defaults(func=run(cmd_audit_prune))
