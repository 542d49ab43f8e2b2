"""`facegate audit verify|tail`: read and check the device's audit journal."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.audit.journal import AuditLog
from edge.audit.records import summarize
from edge.config import Config
from edge.gallery.keys import data_dir_for

Handler = Callable[[argparse.Namespace, Config], int]


def record_event(data_dir: Path, kind: str, body: dict[str, Any]) -> None:
    """Appends one record to the journal of `data_dir` (for CLI commands that change the gallery)."""
    with AuditLog.open(data_dir) as log:
        log.append(kind, body)


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    with AuditLog.open(data_dir_for(args.data_dir, cfg), create=False) as log:
        report = log.verify()
    print(json.dumps(report.to_dict()) if args.json else ("OK: " if report.ok else "FAILED: ") + report.reason)
    return 0 if report.ok else 1


def cmd_tail(args: argparse.Namespace, cfg: Config) -> int:
    with AuditLog.open(data_dir_for(args.data_dir, cfg), create=False) as log:
        records = log.tail(args.n)
    for record in records:
        print(json.dumps(record.to_dict()) if args.json else summarize(record))
    return 0


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    """Registers `audit`; `run(handler)` wraps a handler with config loading."""
    audit = sub.add_parser("audit", help="the signed, hash-chained audit journal").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="check every record's chain link and signature; names the first bad record (exit 1)")
    p.add_argument("--data-dir", type=Path, default=None, help="gallery directory (see [gallery] data_dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_verify))
    p = audit.add_parser("tail", help="the last N records, oldest first")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run(cmd_tail))
