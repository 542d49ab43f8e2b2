"""`facegate config check [--config PATH]`: every problem in a config file, one line each.

The loader (`edge.config.load_config`) stops at the first bad key, which is right for starting
the daemon but slow for someone editing /etc/facegate/config.toml over SSH. This walks the same
tables with the same per-key checks (`edge.config._check_value`), keeps going, and then runs the
loader itself for the rules that span keys and tables. Files the config names (key files,
certificates, calibration) must exist and be readable by whoever runs the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge import config as config_module
from edge.config import Config, config_from_dict
from edge.errors import ConfigError

_ARRAY_OF = re.compile(r"tuple\[(\w+), \.\.\.\]")
# Keys that name a file besides the `*_file` ones (directories end in "/").
_PATH_KEYS = {"liveness.calibration": "file", "models.dir": "dir"}


def check_config(path: Path) -> list[str]:
    """Problems found in `path`, each starting with the dotted key; [] when the daemon would start."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [f"cannot read the file ({exc.strerror or exc})"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"not valid TOML ({exc})"]
    problems = _table_problems(data)
    if problems:
        return problems
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        return [str(exc)]
    return _path_problems(cfg)


def _table_problems(data: dict[str, Any]) -> list[str]:
    tables = {f.name: f for f in dataclasses.fields(Config)}
    defaults = Config()
    problems: list[str] = []
    for name, raw in data.items():
        if name not in tables:
            problems.append(f"{name}: unknown table; valid tables: {', '.join(tables)}")
            continue
        array = _ARRAY_OF.fullmatch(str(tables[name].type))
        if array is None:
            problems += _key_problems(name, type(getattr(defaults, name)), raw)
        elif not isinstance(raw, list):
            problems.append(f"{name}: must be an array of tables ([[{name}]])")
        else:
            cls = getattr(config_module, array.group(1))
            for i, table in enumerate(raw):
                problems += _key_problems(f"{name}[{i}]", cls, table)
    return problems


def _key_problems(name: str, cls: type, raw: Any) -> list[str]:
    if not isinstance(raw, dict):
        return [f"{name}: must be a table (got {type(raw).__name__})"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems, good = [], {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{name}.{key}: unknown key; valid keys: {', '.join(fields)}")
            continue
        try:
            good[key] = config_module._check_value(f"{name}.{key}", fields[key], value)
        except ConfigError as exc:
            problems.append(str(exc))
    if not problems:
        try:  # rules between keys of one table (__post_init__) only make sense on valid values
            cls(**good)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _path_problems(cfg: Config) -> list[str]:
    problems = []
    for key, value, kind in _paths(cfg):
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
    for table in dataclasses.fields(Config):
        value = getattr(cfg, table.name)
        items = [(f"{table.name}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, tuple) else [(table.name, value)]
        for prefix, section in items:
            for f in dataclasses.fields(section):
                key, setting = f"{prefix}.{f.name}", getattr(section, f.name)
                kind = "file" if f.name.endswith("_file") else _PATH_KEYS.get(key)
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
    """Registers `config check`; it reads the file itself (the usual loader would stop at the
    first problem before the command ran)."""
    config = sub.add_parser("config", help="check a config file").add_subparsers(dest="config_command", required=True)
    p = config.add_parser("check", help="name every bad key with the reason; exit 1 when there is any")
    # SUPPRESS: `facegate --config X config check` and `facegate config check --config X` both work.
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="config.toml to check (default: the one the daemon would read)")
    run: Callable[[argparse.Namespace], int] = lambda args: cmd_check(args, default_config)
    p.set_defaults(func=run)
