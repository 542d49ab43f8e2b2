"""`facegate zmq keygen|allow`: CURVE keys for the local ZeroMQ API and the clients let in (docs/door.md).

    facegate zmq keygen /etc/facegate/zmq/server      # server.key_secret (0600) + server.key; prints the public key
    facegate zmq keygen kiosk1                        # on the kiosk: kiosk1.key_secret + kiosk1.key
    facegate zmq allow kiosk1.key                     # into [zmq] allowed_clients_dir (or --dir)

The daemon's `[zmq] curve_secret_key_file` is the server's `.key_secret`; clients need the
server's public `.key` to connect (examples/kiosk_client.py --server-key).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edge.cli.common import Handler
from edge.config import Config
from edge.errors import ConfigError
from edge.outputs.zmq_auth import allow_client, write_keypair


def cmd_keygen(args: argparse.Namespace, cfg: Config) -> int:
    public_path, secret_path, public = write_keypair(args.prefix)
    if args.json:
        print(json.dumps({"public_key": public, "public_key_file": str(public_path), "secret_key_file": str(secret_path)}))
    else:
        print(public)
        print(f"wrote {secret_path} (secret, 0600) and {public_path} (public)", flush=True)
    return 0


def cmd_allow(args: argparse.Namespace, cfg: Config) -> int:
    directory = args.dir or (Path(cfg.zmq.allowed_clients_dir) if cfg.zmq.allowed_clients_dir else None)
    if directory is None:
        raise ConfigError("zmq.allowed_clients_dir: not set; give --dir DIR or set it in the config")
    target, added = allow_client(directory, args.public_key_file)
    print(f"{'allowed' if added else 'already allowed'}: {target}")
    return 0


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    """Registers `zmq`; `run(handler)` wraps a handler with config loading."""
    zmq_cmd = sub.add_parser("zmq", help="CURVE keys for the ZeroMQ API ([zmq] config)").add_subparsers(dest="zmq_command", required=True)
    p = zmq_cmd.add_parser("keygen", help="write a CURVE key pair PREFIX.key_secret (0600) + PREFIX.key; print the public key")
    p.add_argument("prefix", type=Path, metavar="PREFIX", help="path without suffix, e.g. /etc/facegate/zmq/server")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_keygen))
    p = zmq_cmd.add_parser("allow", help="let a client's public key in (copies it into [zmq] allowed_clients_dir)")
    p.add_argument("public_key_file", type=Path, help="the client's .key file (only its public key is copied)")
    p.add_argument("--dir", type=Path, default=None, help="allow-list directory (default: [zmq] allowed_clients_dir)")
    p.set_defaults(func=run(cmd_allow))
