"""Process hardening for the long-running commands (`facegate run`, `facegate hub serve`).

A core dump holds whatever the process had in memory: the key-encryption key, the device key
and every decrypted template. systemd's watchdog ends a wedged daemon with SIGABRT, which dumps
core by default, so both are switched off before any key is read: the core size limit goes to
0 (hard limit too, so nothing in the process can raise it again), and the process is marked
not dumpable (`prctl(PR_SET_DUMPABLE, 0)`), which also stops a process of the same user from
attaching with ptrace or reading /proc/<pid>/mem. The units set `LimitCORE=0` as well; this
covers a daemon started by hand or by another supervisor. What a core was good for — where a
wedged loop hung — still reaches the journal: Python's traceback of every thread, on SIGABRT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import logging
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass

from edge.errors import FacegateError

_LOG = logging.getLogger("facegate")
# <linux/prctl.h>
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


class HardeningError(FacegateError):
    """The process could not be made safe to hold keys (core dumps could not be turned off)."""


@dataclass(frozen=True, slots=True)
class Hardening:
    core_limit: tuple[int, int]  # RLIMIT_CORE (soft, hard) after the change
    dumpable: bool | None  # None: not Linux, no prctl to ask


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


def disable_core_dumps() -> Hardening:
    """No core file, not dumpable; HardeningError when the kernel refuses either (a daemon that
    would dump its keys on the next abort does not start)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        raise HardeningError(f"cannot turn core dumps off (setrlimit RLIMIT_CORE 0: {exc})") from exc
    prctl = _prctl()
    dumpable: bool | None = None
    if prctl is not None:
        if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise HardeningError(f"cannot mark the process not dumpable (prctl PR_SET_DUMPABLE: errno {errno})")
        # Read back: the kernel's answer, not our intention, is what a test and the log report.
        dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0
        if dumpable:
            raise HardeningError("the process is still dumpable after prctl(PR_SET_DUMPABLE, 0)")
    try:
        faulthandler.enable(all_threads=True)  # code locations only, no memory
    except (AttributeError, ValueError, OSError):  # stderr is not a file (embedded, tests): no traceback to write
        pass
    state = Hardening(resource.getrlimit(resource.RLIMIT_CORE), dumpable)
    _LOG.debug("core dumps off (RLIMIT_CORE %s, dumpable %s)", state.core_limit, state.dumpable)
    return state
