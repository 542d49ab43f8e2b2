"""A real PostgreSQL for the hub tests and bench/hub.py: initdb + pg_ctl on a temp dir, loopback, free port.

PostgreSQL refuses to run as root, so as root the cluster belongs to `nobody` (`runuser`).
`PgServer.find()` is None when Debian's `postgresql` package is not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from bench.harness.mqtt_broker import free_port


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="facegate-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def find(cls) -> PgServer | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        return cls(Path(found[-1]).parent) if found else None

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        proc = subprocess.run([*prefix, *args], check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])}: {proc.stderr[-1000:]}")

    def start(self) -> Self:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody")
        data = self.dir / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
