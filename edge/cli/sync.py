"""`facegate sync run|identity`: the MQTT agent on its own, and the keys an admin registers on the hub."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from edge.audit.journal import AuditLog
from edge.config import Config
from edge.gallery.keys import data_dir_for, load_key
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity

Handler = Callable[[argparse.Namespace, Config], int]


def cmd_identity(args: argparse.Namespace, cfg: Config) -> int:
    data_dir = data_dir_for(args.data_dir, cfg)
    print(json.dumps({"device_id": cfg.sync.device_id, "data_dir": str(data_dir), **DeviceIdentity.open(data_dir).public()}))
    return 0


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from sync.agent import SyncAgent

    data_dir = data_dir_for(args.data_dir, cfg)
    key = load_key(data_dir, cfg, create=True, warn=lambda m: print(f"facegate: warning: {m}", file=sys.stderr))
    GalleryStore.open(data_dir, key.kek, create=True).close()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with AuditLog.open(data_dir) as log:
        agent = SyncAgent(cfg, lambda: GalleryStore.open(data_dir, key.kek), log).start()
        print(f"facegate sync: device {cfg.sync.device_id} → {cfg.sync.broker_host}:{cfg.sync.broker_port}", file=sys.stderr, flush=True)
        try:
            stop.wait()
        finally:
            agent.stop()
    return 0


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    """Registers `sync`; `run(handler)` wraps a handler with config loading."""
    sync = sub.add_parser("sync", help="MQTT sync with the hub ([sync] config)").add_subparsers(dest="sync_command", required=True)
    p = sync.add_parser("run", help="run the sync agent alone until SIGTERM/SIGINT (the daemon runs it itself)")
    p.add_argument("--data-dir", type=Path, default=None, help="gallery directory (see [gallery] data_dir)")
    p.set_defaults(func=run(cmd_run), long_running=True)  # holds the KEK for as long: core dumps off (edge/service/hardening.py)
    p = sync.add_parser("identity", help="print this device's public keys (register them on the hub); creates them if needed")
    p.add_argument("--data-dir", type=Path, default=None)
    p.set_defaults(func=run(cmd_identity))
