"""Keys never reach a core dump: `facegate run`, `facegate hub serve` and `facegate sync run` turn
core dumps off and mark themselves not dumpable before they read a key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge.cli.main import build_parser
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
NOBODY = 65534

# The kernel's own answers, asked from inside the process (PR_GET_DUMPABLE = 3).
_CHILD = """
import ctypes, json, resource
from edge.service.hardening import disable_core_dumps
state = disable_core_dumps()
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({"dumpable": libc.prctl(3, 0, 0, 0, 0), "core": resource.getrlimit(resource.RLIMIT_CORE), "reported": state.dumpable}))
"""


def test_disable_core_dumps_sets_the_limit_to_zero_and_the_process_not_dumpable() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=REPO, timeout=60, check=True).stdout
    assert json.loads(out) == {"dumpable": 0, "core": [0, 0], "reported": False}


@pytest.mark.parametrize("argv", [["run"], ["hub", "serve"], ["sync", "run"]])
def test_the_long_running_commands_are_hardened(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).long_running is True


def test_short_commands_stay_dumpable() -> None:
    # An admin command that crashes may leave a core for a bug report; it holds a key only briefly.
    assert getattr(build_parser().parse_args(["gallery", "list"]), "long_running", False) is False


def _core_limit(pid: int) -> str | None:
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    line = next(x for x in lines if x.startswith("Max core file size"))
    return " ".join(line.split()[4:6])


def test_a_running_daemon_has_no_core_limit_and_its_proc_files_belong_to_root(model_store) -> None:
    """A process that is not dumpable has its /proc/<pid> files owned by root, which shows from
    outside only when it runs as another user: as root (CI), the daemon runs as nobody."""
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="facegate-hardening-"))  # not under pytest's root-only tmp
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_root else {}
    env = {**os.environ, "HOME": str(data)}
    try:
        if as_root:
            os.chown(data, NOBODY, NOBODY)
        init = subprocess.run([sys.executable, "-m", "edge.cli.main", "keys", "init", "--data-dir", str(data / "g")],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=120, **user)
        assert init.returncode == 0, init.stderr
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli.main", "run", "--data-dir", str(data / "g"), "--source", str(CLIP), "--realtime"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **user,
        )
        try:
            limited = wait_for(lambda: _core_limit(proc.pid) == "0 0", 60)
            undumpable = wait_for(lambda: os.stat(f"/proc/{proc.pid}/status").st_uid == 0, 60)
            alive = proc.poll() is None
            uid = next(x for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if x.startswith("Uid:")).split()[1]
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=60)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert uid != "0"  # the daemon is not root, so a root-owned /proc/<pid>/status means "not dumpable"
    assert limited and undumpable and alive, err
