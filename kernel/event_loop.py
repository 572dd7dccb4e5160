"""The event loop every Cairn process runs on: uvloop where it is installed (a dependency on
Linux), asyncio's own otherwise or when CAIRN_EVENT_LOOP=asyncio says so.

uvloop runs the same asyncio code with its I/O in libuv. Measured on this project (quiet machine,
two pairs): four test files that put the API server, the database driver and the HTTP client in
one loop took 6-9% less time (78.5 / 73.2 s on asyncio's loop, 71.1 / 68.8 s on uvloop);
transfers of 1000 small files by the daemons were no faster (one run each: 148 files/s on uvloop,
172 on asyncio's, 0.69x and 0.72x `xrdcp --parallel 8` in the same runs; `cairn upload` 1.53 s
against 1.98 s; `bench/results/event_loop_ab.json`). The switch is for an
operator who meets a difference: one was found and fixed (uvloop's subprocesses take no
user/group options; `wms.payload_account` switches accounts itself).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kernel.errors import ConfigurationError

T = TypeVar("T")
ENV = "CAIRN_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def loop_name() -> str:
    """The loop this process runs: CAIRN_EVENT_LOOP if set (uvloop, asyncio), else uvloop when
    importable."""
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted and wanted not in CHOICES:
        raise ConfigurationError(f"{ENV}={wanted!r}: give one of {', '.join(CHOICES)}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise ConfigurationError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)") from None
        return "asyncio"
    return "uvloop"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of this process's kind (`loop_name`)."""
    if loop_name() == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on this process's kind of loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
