"""`facegate audit verify|tail|prune`: read and check the device's audit journal (and the hub's anchor of it), prune it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.audit.anchor import ANCHOR_FILE, read_anchor
from edge.audit.journal import AuditLog, VerifyReport
from edge.audit.records import summarize
from edge.config import Config
from edge.errors import AuditError, ConfigError
from edge.gallery.keys import data_dir_for

Handler = Callable[[argparse.Namespace, Config], int]


def record_event(data_dir: Path, kind: str, body: dict[str, Any]) -> None:
    """Appends one record to the journal of `data_dir` (for CLI commands that change the gallery)."""
    with AuditLog.open(data_dir) as log:
        log.append(kind, body)


def _hub_keys(data_dir: Path, cfg: Config) -> dict[str, Any]:
    """The hub signing keys this device trusts (its keyring, read only, and `[sync] hub_sign_key_file`)."""
    from sync.hubkeys import KEYRING_FILE, HubKeyring
    from sync.keyfiles import hub_sign_key
    from sync.signing import key_id

    keys: dict[str, Any] = {}
    revoked: dict[str, int] = {}
    if (data_dir / KEYRING_FILE).exists():
        try:
            ring = HubKeyring.open(data_dir, None)  # no seed: nothing is written
            keys, revoked = dict(ring), ring.revoked()
        except ConfigError:  # every key revoked: nothing to check the anchor with
            pass
    if cfg.sync.hub_sign_key_file:
        key = hub_sign_key(cfg.sync.hub_sign_key_file)
        if key_id(key) not in revoked:
            keys[key_id(key)] = key
    return keys


def _anchor_problem(ack: dict[str, Any], data_dir: Path, cfg: Config, what: str = ANCHOR_FILE) -> tuple[str, str]:
    """(signature state, problem) of a hub ack: 'verified' / 'unchecked' / 'bad', and '' or why it is refused."""
    from sync.protocol import ACK_DOMAIN, ProtocolError
    from sync.signing import verify

    keys = _hub_keys(data_dir, cfg)
    if not keys:
        return "unchecked", ""
    try:
        verify(ack, ACK_DOMAIN, keys, what)
    except ProtocolError as exc:
        return "bad", f"{exc}: the hub's anchor was forged or altered"
    return "verified", ""


def _checkpoint_problem(report: VerifyReport, data_dir: Path, cfg: Config, out: dict[str, Any]) -> VerifyReport:
    """The newest checkpoint's hub ack must verify too: a prune is allowed by the hub's word only."""
    checkpoint = report.checkpoint
    if checkpoint is None:
        return report
    state, problem = _anchor_problem(checkpoint.ack, data_dir, cfg, f"checkpoint record {checkpoint.seq}")
    out["checkpoint"] = {**checkpoint.to_dict(), "signature": state}
    if problem:
        return VerifyReport(False, report.records, checkpoint.seq, problem, report.anchor_seq, checkpoint)
    return report


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    data_dir = data_dir_for(args.data_dir, cfg)
    anchor = read_anchor(data_dir)  # the hub's signed (seq, hash): the journal must reach it (edge.audit.anchor)
    with AuditLog.open(data_dir, create=False) as log:
        report = log.verify(anchor=None if anchor is None else (anchor.seq, anchor.hash))
    out = report.to_dict()
    if report.ok:
        report = _checkpoint_problem(report, data_dir, cfg, out)
        out.update(report.to_dict())
    if anchor is not None and report.ok:
        state, problem = _anchor_problem(anchor.ack, data_dir, cfg)
        out["anchor"] = {"seq": anchor.seq, "hash": anchor.hash, "signature": state}
        if problem:
            report = VerifyReport(False, report.records, anchor.seq, problem, anchor.seq, report.checkpoint)
            out.update(report.to_dict())
        elif state == "unchecked" and report.ok:
            out["reason"] = report.reason + " (no hub key configured: the anchor's signature was not checked)"
    print(json.dumps(out) if args.json else ("OK: " if report.ok else "FAILED: ") + out["reason"])
    return 0 if report.ok else 1


def cmd_prune(args: argparse.Namespace, cfg: Config) -> int:
    """One prune by hand: `[audit] retention_days` (or --days), below the stored hub anchor, whose
    hub signature must verify first (a forged anchor file must not delete records)."""
    from edge.audit.retention import prune

    data_dir = data_dir_for(args.data_dir, cfg)
    days = cfg.audit.retention_days if args.days is None else args.days
    anchor = read_anchor(data_dir)
    if anchor is None:
        raise AuditError(f"{data_dir / ANCHOR_FILE}: the hub never acknowledged this journal: nothing may be pruned")
    state, problem = _anchor_problem(anchor.ack, data_dir, cfg)
    if state != "verified":
        raise AuditError(problem or "audit prune: no hub signing key configured ([sync] hub_sign_key_file): the anchor cannot be checked, nothing is pruned")
    with AuditLog.open(data_dir, create=False) as log:
        result = prune(log, anchor, days)
    print(json.dumps(result.to_dict()) if args.json else f"pruned {result.pruned} record(s); the journal starts after record {result.upto}")
    return 0


def cmd_tail(args: argparse.Namespace, cfg: Config) -> int:
    with AuditLog.open(data_dir_for(args.data_dir, cfg), create=False) as log:
        records = log.tail(args.n)
    for record in records:
        print(json.dumps(record.to_dict()) if args.json else summarize(record))
    return 0


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    """Registers `audit`; `run(handler)` wraps a handler with config loading."""
    audit = sub.add_parser("audit", help="the signed, hash-chained audit journal").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="check every record's chain link and signature, and that the journal reaches the hub's signed anchor; names the first bad record (exit 1)")
    p.add_argument("--data-dir", type=Path, default=None, help="gallery directory (see [gallery] data_dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_verify))
    p = audit.add_parser("prune", help="delete records older than [audit] retention_days that the hub acknowledged, leaving a signed checkpoint")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--days", type=int, default=None, help="this retention instead of [audit] retention_days (0 = prune nothing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_prune))
    p = audit.add_parser("tail", help="the last N records, oldest first")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run(cmd_tail))
