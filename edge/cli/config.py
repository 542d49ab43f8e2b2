"""`facegate config check [--config PATH]`: every problem in a config file, one line each.

The problems are the loader's own (`edge.config.load_config` reports every one of them at once,
as the daemon would refuse them at start); once the file loads, the files it names (key files,
certificates, calibration, the models directory) must exist and be readable by whoever runs
the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.config import Config, load_config, settings
from edge.errors import ConfigError, KeyfileError

# Keys that name a file besides the `*_file` ones, and directories.
_PATH_KEYS = {"liveness.calibration": "file", "models.dir": "dir", "zmq.allowed_clients_dir": "dir"}


def check_config(path: Path) -> list[str]:
    """Problems found in `path`, each starting with the dotted key; [] when the daemon would start."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return list(exc.problems)
    problems = _path_problems(cfg)
    if cfg.zmq.curve_secret_key_file and not any(p.startswith("zmq.") for p in problems):
        problems += _curve_problems(cfg)
    return problems


def _curve_problems(cfg: Config) -> list[str]:
    """What the daemon refuses of its CURVE keys at start: a secret key others can read, a file
    that is no key pair, an allow-list directory others can write to."""
    from edge.outputs.zmq_auth import AllowList, read_server_keys

    try:
        read_server_keys(Path(cfg.zmq.curve_secret_key_file))
        AllowList(Path(cfg.zmq.allowed_clients_dir))
    except KeyfileError as exc:
        message = str(exc)
        return [message if message.startswith("zmq.") else f"zmq.curve_secret_key_file: {message}"]
    return []


def _path_problems(cfg: Config) -> list[str]:
    from edge.gallery.keys import systemd_credential

    problems = []
    for key, value, kind in _paths(cfg):
        if key == "gallery.key_file" and systemd_credential() is not None:
            continue  # the unit (ExecStartPre=, ExecReload=) reads systemd's copy; the file itself is root's
        path = Path(value)
        if kind == "dir" and not path.is_dir():
            problems.append(f"{key}: {value}: no such directory")
        elif kind == "file" and not path.is_file():
            problems.append(f"{key}: {value}: no such file")
        elif kind == "file":
            try:
                path.open("rb").close()
            except OSError as exc:
                problems.append(f"{key}: {value}: cannot read ({exc.strerror or exc})")
    return problems


def _paths(cfg: Config) -> list[tuple[str, str, str]]:
    found = []
    for key, setting in settings(cfg):
        kind = "file" if key.endswith("_file") else _PATH_KEYS.get(key)
        if kind and isinstance(setting, str) and setting:
            found.append((key, setting, kind))
    return found


def cmd_check(args: argparse.Namespace, default_config: Path) -> int:
    path = getattr(args, "config", None) or default_config
    problems = check_config(path)
    if not problems:
        print(f"{path}: OK")
        return 0
    print(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def add_commands(sub: argparse._SubParsersAction, default_config: Path) -> None:
    """Registers `config check`; it reads the file itself (the other commands load it before they
    run and stop there when it has problems)."""
    config = sub.add_parser("config", help="check a config file").add_subparsers(dest="config_command", required=True)
    p = config.add_parser("check", help="name every bad key with the reason; exit 1 when there is any")
    # SUPPRESS: `facegate --config X config check` and `facegate config check --config X` both work.
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config.toml to check (default: the one the daemon would read)")
    def run(args: argparse.Namespace) -> int:
        return cmd_check(args, default_config)

    p.set_defaults(func=run)
