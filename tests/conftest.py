"""Test bed: real servers on loopback (see tests/fixtures/). The tests run on the event loop the
product is configured to run on (`kernel.event_loop`: asyncio's, or CAIRN_EVENT_LOOP=uvloop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from kernel import event_loop

pytest_plugins = [
    "tests.fixtures.endpoints",
    "tests.fixtures.mongo",
    "tests.fixtures.api",
    "tests.fixtures.grid",
    "tests.fixtures.catalogue",
    "tests.fixtures.payloads",
    "tests.fixtures.s3",
    "tests.fixtures.xrootd",
    "tests.fixtures.live_ses",
    "tests.fixtures.authz",
    "tests.fixtures.multi_vo",
    "tests.fixtures.slurm",
    "tests.fixtures.tcp_gate",
    "tests.fixtures.http_servers",
    "tests.fixtures.portal",
    "tests.fixtures.browser",
]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """One loop kind for every async test and fixture: the product's (a single factory leaves
    the tests' names as they are)."""
    return {event_loop.loop_name(): event_loop.loop_factory()}
