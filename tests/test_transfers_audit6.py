"""Audit 6 of the request routes: what two users' concurrent calls leave, and what they tell.

A request another user's submission joins can end (its owner cancels it) between the submission's
look for it and its join: the joiner was told it was queued, yet it was not theirs (404 to them)
and nothing would copy their file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.authz import DATASET, PRIVATE, SHARED, World, same_answer
from transfers import queueing
from transfers import requests as rq


async def test_a_request_cancelled_while_another_user_joins_it_is_not_reported_queued_to_them(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, bobs = await world.call("bob", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    assert status == 201, bobs
    rid = bobs["successful"][SHARED]
    real = queueing.find_by_values

    async def bob_cancels_meanwhile(*args: Any, **kw: Any) -> list[Any]:
        found: list[Any] = await real(*args, **kw)
        if found:  # carol's submission found bob's request: bob's cancel lands before her join
            status, answer = await world.call("bob", "POST", "/requests/cancel", {"ids": [rid]})
            assert status == 200 and answer["cancelled"] == 1, answer
        return found

    monkeypatch.setattr(queueing, "find_by_values", bob_cancels_meanwhile)
    status, carols = await world.call("carol", "POST", "/requests/transfers", {"lfns": [SHARED], "dest_se": "DISK2"})
    monkeypatch.undo()
    assert status == 201, carols
    for lfn, request_id in carols["successful"].items():  # what she is told is queued is hers and open
        status, seen = await world.call("carol", "GET", f"/requests/{request_id}")
        assert status == 200 and seen["state"] in rq.OPEN_STATES, (lfn, status, seen)
    assert SHARED in carols["successful"] or "submit again" in carols["failed"].get(SHARED, ""), carols


async def test_replicating_a_dataset_names_none_of_its_files_the_caller_cannot_see(world: World) -> None:
    """`GET /dids/contents` leaves out the members behind a directory the caller cannot search;
    replicating the dataset answered each of them by name ("no such file"), so anyone could list a
    dataset's hidden files by asking for its replication."""
    status, carols = await world.call("carol", "POST", "/requests/transfers", {"dataset": DATASET, "dest_se": "DISK2"})
    assert status == 201 and list(carols["successful"]) == [SHARED], carols
    assert PRIVATE not in json.dumps(carols), carols
    status, _ = await world.call("bob", "POST", "/dids", {"did": "lhcb:bob.empty", "type": "dataset"})
    assert status == 201
    # alice reaches neither file: her answer is an empty dataset's
    hidden = await world.call("alice", "POST", "/requests/transfers", {"dataset": DATASET, "dest_se": "DISK2"})
    empty = await world.call("alice", "POST", "/requests/transfers", {"dataset": "lhcb:bob.empty", "dest_se": "DISK2"})
    assert hidden[0] == 400 and same_answer(hidden, empty, DATASET, "lhcb:bob.empty"), (hidden, empty)
