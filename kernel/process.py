"""Child processes: they cannot outlive their parent (Linux PR_SET_PDEATHSIG), and stop in bounded time."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def child_preexec() -> None:
    """Runs in the child before exec: die with SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def keep_memory_private() -> None:
    """Make this process undumpable (Linux PR_SET_DUMPABLE 0): processes of the same Unix user,
    such as the payloads a pilot runs, can then neither read its /proc files (environ: its token
    and the SEs' credentials) nor attach to it and read its memory. Its children are dumpable
    again after exec."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


# The settings that hold a process's secrets (its token, the SEs' credentials, the database's
# address, the signing key's path): never passed on to a process that runs others' code or that
# gets secrets of its own (a pilot from its factory, a payload from its pilot).
SECRET_SETTINGS = ("CAIRN_TOKEN", "CAIRN_STORAGE_CREDENTIALS", "CAIRN_MONGODB_URI", "CAIRN_SIGNING_KEY_FILE")


def without_settings(environ: Mapping[str, str], names: Iterable[str] = SECRET_SETTINGS) -> dict[str, str]:
    """environ less the settings `names` (CAIRN_... variables), their nested `__` forms too, in any
    case, as the settings read them."""
    wanted = tuple(name.upper() for name in names)

    def named(key: str) -> bool:
        upper = key.upper()
        return any(upper == name or upper.startswith(f"{name}__") for name in wanted)

    return {key: value for key, value in environ.items() if not named(key)}


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
