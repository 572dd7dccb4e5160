"""Audit 6 of the request queue: what two users' concurrent calls leave.

A request another user's submission joins can end (its owner cancels it) between the submission's
look for it and its join: the joiner was told it was queued, yet it was not theirs (404 to them)
and nothing would copy their file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.authz import SHARED, World
from transfers import requests as rq


async def test_a_request_cancelled_while_another_user_joins_it_is_not_reported_queued_to_them(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, bobs = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201, bobs
    rid = bobs["successful"][SHARED]
    real = rq.find_by_values

    async def bob_cancels_meanwhile(*args: Any, **kw: Any) -> list[Any]:
        found: list[Any] = await real(*args, **kw)
        if found:  # carol's submission found bob's request: bob's cancel lands before her join
            status, answer = await world.call("bob", "POST", "/requests/cancel", {"ids": [rid]})
            assert status == 200 and answer["cancelled"] == 1, answer
        return found

    monkeypatch.setattr(rq, "find_by_values", bob_cancels_meanwhile)
    status, carols = await world.call("carol", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    monkeypatch.undo()
    assert status == 201, carols
    for lfn, request_id in carols["successful"].items():  # what she is told is queued is hers and open
        status, seen = await world.call("carol", "GET", f"/requests/{request_id}")
        assert status == 200 and seen["state"] in rq.OPEN_STATES, (lfn, status, seen)
    assert SHARED in carols["successful"] or "submit again" in carols["failed"].get(SHARED, ""), carols
