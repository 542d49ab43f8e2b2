"""`facegate` as a user runs it: a real subprocess of the CLI with a config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def facegate_cli(config: Path, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """`facegate --config CONFIG ARGS...`; with `check`, a non-zero exit fails the test with its stderr."""
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(config), *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"facegate {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc
