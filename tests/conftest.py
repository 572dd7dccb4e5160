"""Test bed: real servers on loopback (see tests/fixtures/). The tests run on asyncio's loop, the
product's default (`kernel.event_loop`); processes they start take CAIRN_EVENT_LOOP from them."""

from __future__ import annotations

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

