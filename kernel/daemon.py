"""The loop every Cairn daemon runs in: do a unit of work, sleep when idle, back off while a
dependency is down, stop cleanly on SIGTERM/SIGINT.

Daemons share work through leases in MongoDB (`kernel.claims` for documents of a queue,
`kernel.lease` for named leases and for renewing while work runs); this module only runs the
loop. A daemon is a class with a `name` and an async `run_once()` that returns how many items
it handled (0 means idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from kernel.documents import unavailable_errors
from kernel.errors import CairnError, ServiceUnavailable

T = TypeVar("T")

log = logging.getLogger("cairn.daemon")


def retried(exc: Exception) -> bool:
    """Does exc make a daemon back off and try again rather than fail: a dependency that is down.
    The driver's errors are looked up only then (the pilot, a daemon with no database, does not
    load the driver to start)."""
    return isinstance(exc, (ServiceUnavailable, *unavailable_errors()))


async def one_of_many(work: Awaitable[T], what: str, logger: logging.Logger) -> tuple[T | None, str | None]:
    """One item's work in a pass over many (a rule, a subscription, a transformation, a queue):
    its result, or, when it raised, None and why (logged), for the caller to keep on the item
    while the others go on, so that one user's item never stops a daemon for everyone. A
    dependency down is no one item's fault: it propagates, the pass stops, the daemon backs off."""
    try:
        return await work, None
    except Exception as exc:
        if retried(exc):
            raise
        logger.exception("%s failed; the others go on", what)
        return None, exc.message if isinstance(exc, CairnError) else f"unexpected error: {type(exc).__name__}"


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    base_s: float = 0.5
    cap_s: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** min(self.failures, 16)))

    def reset(self) -> None:
        self.failures = 0


def worker_id(name: str) -> str:
    """A name for this process that other processes can read in a lease."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}"


class Daemon(ABC):
    name: str = "daemon"
    idle_sleep_s: float = 1.0

    def __init__(self) -> None:
        self.worker = worker_id(self.name)
        self._stop = asyncio.Event()

    @abstractmethod
    async def run_once(self) -> int:
        """Handle one batch of work; return how many items were handled."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most daemons hold nothing to release
        """Release resources when the loop ends (override where needed)."""

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def run(self, *, max_cycles: int | None = None) -> None:
        """Loop until stopped (or for max_cycles iterations, for tests and one-shot runs)."""
        backoff = Backoff()
        cycles = 0
        log.info("%s starting as %s", self.name, self.worker)
        try:
            while not self.stopping and (max_cycles is None or cycles < max_cycles):
                cycles += 1
                try:
                    handled = await self.run_once()
                except Exception as exc:
                    delay = backoff.next_delay()
                    if retried(exc):
                        log.warning("%s: dependency unavailable (%s); retrying in %.1fs", self.name, exc, delay)
                    else:
                        log.exception("%s: unexpected error; retrying in %.1fs", self.name, delay)
                    await self.sleep(delay)
                    continue
                backoff.reset()
                if handled == 0:
                    await self.sleep(self.idle_sleep_s)
        finally:
            await self.close()
            log.info("%s stopped", self.name)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
