"""The event loop every Cairn process runs on: Python's own (asyncio), or uvloop when
CAIRN_EVENT_LOOP=uvloop says so (a dependency on Linux).

Measured on this project, quiet machine (`bench/results/event_loop_ab.json`): on uvloop, four test
files that put the API server, the database driver and the HTTP client in one loop took 6-9% less
time (asyncio 78.5 / 73.2 s, uvloop 71.1 / 68.8 s), and `cairn upload` of 1000 small files 1.53 s
against 1.98 s; but the transfer daemons copied 1000 small files 10-14% slower (two pairs: 172 / 200.6
files/s on asyncio's loop, 148 / 179.3 on uvloop; 0.72 / 0.68x against 0.69 / 0.59x `xrdcp
--parallel 8` in the same runs). Transfers are what an installation spends its time on, so the
default stays asyncio's loop; an API-heavy installation may choose uvloop. The whole suite ran on
each; one difference was found and fixed (and is tested with a pilot on uvloop):
uvloop's subprocesses take no user/group options (`wms.payload_account` switches accounts itself).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from kernel.errors import ConfigurationError

T = TypeVar("T")
ENV = "CAIRN_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop")


def loop_name() -> str:
    """The loop this process runs: CAIRN_EVENT_LOOP (asyncio, uvloop), by default asyncio."""
    wanted = os.environ.get(ENV, "").strip().lower() or "asyncio"
    if wanted not in CHOICES:
        raise ConfigurationError(f"{ENV}={wanted!r}: give one of {', '.join(CHOICES)}")
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigurationError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)") from None
    return wanted


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of this process's kind (`loop_name`)."""
    if loop_name() == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def new_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def chosen_loop() -> asyncio.AbstractEventLoop | None:
    """A new loop for a library that makes its own by default (aiohttp's `run_app`): uvloop's when
    chosen, else None, so that asyncio's default runs exactly as the library runs it."""
    return new_loop() if loop_name() == "uvloop" else None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on this process's kind of loop (asyncio's: `asyncio.run` itself)."""
    if loop_name() == "asyncio":
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
