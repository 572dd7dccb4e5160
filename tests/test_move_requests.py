"""Moves done once however often their call is sent (`catalogue.move_requests`): a move whose
answer was lost is sent again by the SDK and answered what its first sending did, a file's or a
directory's; `cairn mv --request-id` run again answers the same; the key is the caller's and the
move's own. Before, the SDK failed at once, and a sending again answered 404 for its own work."""

from __future__ import annotations

import json

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from catalogue.collection_names import FILES
from catalogue.directories import DIRECTORIES
from kernel.db import Document
from kernel.errors import NotFound
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.test_calls_sent_again import answer_lost

WRITER = ("catalogue.read", "catalogue.write")


async def _files(client: Client, *lfns: str) -> None:
    outcome = await client.register_files([{"lfn": lfn, "size": 10, "adler32": "00000001"} for lfn in lfns])
    assert sorted(outcome["successful"]) == sorted(lfns), outcome


async def _under(db: AsyncDatabase[Document], prefix: str) -> list[str]:
    return sorted([d["_id"] async for d in db[FILES].find({"_id": {"$regex": f"^{prefix}"}}, {"_id": 1})])


@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_a_move_whose_answer_was_lost_is_sent_again_and_answered_what_it_did(
    api: RunningApi, database: AsyncDatabase[Document], kind: str,
) -> None:
    async with api.client() as client:
        await _files(client, "/vo/lost/d/a", "/vo/lost/d/e/b")
    source, destination = ("/vo/lost/d/a", "/vo/lost/d/a2") if kind == "file" else ("/vo/lost/d", "/vo/lost/d2")
    answer = await answer_lost(api, api.admin_token, b"POST /api/v1/namespace/move",
                               lambda client: client.move(source, destination))
    assert answer["path"] == destination and answer["type"] == kind, answer
    assert "moved_by" not in answer
    expected = ["/vo/lost/d/a2", "/vo/lost/d/e/b"] if kind == "file" else ["/vo/lost/d2/a", "/vo/lost/d2/e/b"]
    assert await _under(database, "/vo/lost/") == expected
    if kind == "directory":
        assert await database[DIRECTORIES].find_one({"_id": "/vo/lost/d"}) is None


async def test_cairn_mv_run_again_with_its_request_id_answers_the_same_move(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    async with api.client() as client:
        await _files(client, "/vo/cron/a")
    args = ("mv", "/vo/cron/a", "/vo/cron/b", "--request-id", "cron-move-42", "--json")
    first = await run_cli(api.url, api.admin_token, *args)
    again = await run_cli(api.url, api.admin_token, *args)
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    first_answer, again_answer = json.loads(first.stdout), json.loads(again.stdout)
    assert {k: v for k, v in first_answer.items() if k != "modified"} == {
        k: v for k, v in again_answer.items() if k != "modified"}  # stored to the millisecond
    assert json.loads(again.stdout)["path"] == "/vo/cron/b"
    assert await _under(database, "/vo/cron/") == ["/vo/cron/b"]
    plain = await run_cli(api.url, api.admin_token, "mv", "/vo/cron/a", "/vo/cron/b")  # no key: a new move
    assert plain.returncode != 0 and "does not exist" in plain.stderr


async def test_a_request_id_is_its_callers_and_its_moves_own(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    """Another user sending the same key, or the key sent for another move, is judged as a new
    move (404 here): no one is told of a move that was not theirs."""
    async with api.client() as admin:
        await admin.mkdir("/vo/keys", parents=True)
        await admin.chmod("/vo/keys", 0o777)
    async with api.client(api.token(sub="alice", scopes=WRITER)) as alice, \
            api.client(api.token(sub="bob", scopes=WRITER)) as bob:
        await _files(alice, "/vo/keys/a")
        moved = await alice.move("/vo/keys/a", "/vo/keys/b", request_id="shared-key-1")
        assert moved["path"] == "/vo/keys/b"
        assert (await alice.move("/vo/keys/a", "/vo/keys/b", request_id="shared-key-1"))["path"] == "/vo/keys/b"
        with pytest.raises(NotFound):
            await bob.move("/vo/keys/a", "/vo/keys/b", request_id="shared-key-1")
        with pytest.raises(NotFound):
            await alice.move("/vo/keys/a", "/vo/keys/c", request_id="shared-key-1")
        assert "moved_by" not in await alice.stat("/vo/keys/b")
    assert await _under(database, "/vo/keys/") == ["/vo/keys/b"]
