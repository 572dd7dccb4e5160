"""A DID's creation done once however often its call is sent: the DID carries its call's stamp
(`catalogue.datasets.MADE_BY`), so a sending after the first one's answer was lost answers the
DID, where it answered 409 "exists already" before; the key is its caller's and its body's own."""

from __future__ import annotations

import json

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.datasets import DATASETS
from kernel.db import Document
from kernel.errors import Conflict
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.test_calls_sent_again import answer_lost

DID_SCOPES = ("catalogue.read", "catalogue.write")


async def test_a_did_whose_answer_was_lost_is_sent_again_and_answered(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    made = await answer_lost(api, api.admin_token, b"POST /api/v1/dids", lambda c: c.create_did("vo:lost"))
    assert made["did"] == "vo:lost" and made["state"] == "open" and "made_by" not in made
    assert await database[DATASETS].count_documents({"_id": "vo:lost"}) == 1


async def test_the_cli_run_again_with_its_request_id_answers_the_same_did(api: RunningApi) -> None:
    args = ("dataset", "create", "vo:cron", "--description", "nightly", "--request-id", "cron-did-42", "--json")
    first = await run_cli(api.url, api.admin_token, *args)
    again = await run_cli(api.url, api.admin_token, *args)
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    assert json.loads(first.stdout)["did"] == json.loads(again.stdout)["did"] == "vo:cron"
    other = await run_cli(api.url, api.admin_token, "dataset", "create", "vo:cron", "--description", "other",
                          "--request-id", "cron-did-42")
    assert other.returncode != 0 and "exists already" in other.stderr  # the key sent for another DID


async def test_a_request_id_is_its_callers_own(api: RunningApi) -> None:
    async with api.client(api.token(sub="alice", scopes=DID_SCOPES)) as alice, \
            api.client(api.token(sub="bob", scopes=DID_SCOPES)) as bob:
        await alice.create_did("cta:shared", request_id="shared-key-1")
        assert (await alice.create_did("cta:shared", request_id="shared-key-1"))["owner"] == "alice"
        with pytest.raises(Conflict, match="exists already"):
            await bob.create_did("cta:shared", request_id="shared-key-1")
        with pytest.raises(Conflict, match="exists already"):
            await alice.create_did("cta:shared")  # a new call
