"""What every verb module shares: which config file a command reads, and the handler type."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from edge.config import Config, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"

# A verb: the parsed arguments and the config they name → the exit status.
Handler = Callable[[argparse.Namespace, Config], int]


def config_for(args: argparse.Namespace) -> Config:
    """`--config FILE` (before or after the verb), else the bundled config.toml, else the defaults."""
    path = getattr(args, "config", None)
    if path is not None:
        return load_config(path)
    return load_config(DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)


def warn(message: str) -> None:
    print(f"facegate: warning: {message}", file=sys.stderr)
