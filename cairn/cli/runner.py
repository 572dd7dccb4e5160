"""Run an async CLI action, turning Cairn errors into a message and an exit code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cairn.cli.output import fail
from kernel import event_loop
from kernel.errors import CairnError, ServiceUnavailable
from kernel.ride_out import noticing

T = TypeVar("T")

if TYPE_CHECKING:
    from cairn.sdk import Client


def run(action: Callable[[Client], Awaitable[T]]) -> T:
    """Call action with a connected SDK client; exit non-zero with a readable error on failure."""

    from cairn.sdk import Client  # here, not at the top: `cairn --help` needs no HTTP client

    async def go() -> T:
        async with Client() as client:
            with noticing(_say_waiting):
                return await action(client)

    try:
        return event_loop.run(go())
    except CairnError as exc:
        fail(exc)
        raise  # unreachable: fail() exits


_told: list[bool] = []  # said once per command: a bulk command's calls may all wait at once


def _say_waiting(error: ServiceUnavailable, seconds_left: float) -> None:
    """On stderr, once: the API went away and the command waits for it (CAIRN_API_RIDE_OUT)."""
    if not _told:
        _told.append(True)
        click.echo(f"cairn: {error.message}; trying again for up to {seconds_left:.0f} s", err=True)


def run_and_say(action: Callable[[Client], Awaitable[Any]], done: str) -> None:
    """`run` an action whose answer needs no showing, then say what was `done`."""
    run(action)
    click.echo(done)


def run_coro(coro: Awaitable[Any]) -> Any:
    try:
        return event_loop.run(_await(coro))
    except CairnError as exc:
        fail(exc)


async def _await(coro: Awaitable[Any]) -> Any:
    with noticing(_say_waiting):
        return await coro
