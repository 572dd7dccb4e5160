"""Child processes: they cannot outlive their parent (Linux PR_SET_PDEATHSIG), and stop in bounded time."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """Runs in the child before exec: die with SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], *, timeout_s: float = 10) -> None:
    """SIGTERM every child still running, give them `timeout_s` in all to exit, SIGKILL the rest."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
