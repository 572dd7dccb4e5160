"""The stager: stage requests brought online and released; transfers from tape staged, then copied."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.storage_elements import StorageElement
from kernel.db import Document
from kernel.errors import InvalidInput
from kernel.settings import Settings
from storage_plugins.registry import plugin_for
from storage_plugins.tape import TapePlugin
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.transfers import (
    add_ses,
    disk_se,
    fast_settings,
    put_files,
    replica_status,
    run_until_drained,
    se_root,
    tape_se,
)
from transfers import queueing
from transfers import requests as rq
from transfers.stager import Stager
from transfers.worker import TransferWorker


async def test_a_stage_request_is_done_once_the_file_is_online_in_the_disk_cache(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.5)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/vo/raw/f"])
    await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="t")
    await run_until_drained(database, Stager(fast_settings(settings), database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["stage"]["se"] == "TAPE"
    plugin = plugin_for(request["stage"]["url"], tape.protocols[0].extra)
    assert isinstance(plugin, TapePlugin) and await plugin.is_online(request["stage"]["url"])


async def test_a_transfer_whose_only_source_is_on_tape_waits_in_staging_then_copies(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.5), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    contents = await put_files(database, [tape], ["/vo/raw/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/raw/f", "dest_se": "DST"}], requester="t")
    fast = fast_settings(settings)
    worker = TransferWorker(fast, database)
    await worker.run(max_cycles=1)
    parked = await database[rq.REQUESTS].find_one({})
    assert parked is not None and parked["state"] == "staging" and parked["stage"]["se"] == "TAPE"
    await run_until_drained(database, worker, Stager(fast, database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "done" and request["result"]["source_se"] == "TAPE"
    assert (se_root(dst) / "vo/raw/f").read_bytes() == contents["/vo/raw/f"]
    assert await replica_status(database, "/vo/raw/f", "DST") == "available"


async def test_staging_a_file_without_a_replica_on_that_tape_fails(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape, disk = tape_se("TAPE", tmp_path / "t"), disk_se("DISK", tmp_path / "d")
    await add_ses(database, tape, disk)
    await put_files(database, [disk], ["/vo/f"])
    await queueing.submit(database, "stage", [{"lfn": "/vo/f", "dest_se": "TAPE"}], requester="t")
    await run_until_drained(database, Stager(fast_settings(settings), database), timeout_s=30)
    request = await database[rq.REQUESTS].find_one({})
    assert request is not None
    assert request["state"] == "failed" and "no replica on TAPE" in request["last_error"]


def _tape_plugin(se: StorageElement) -> TapePlugin:
    plugin = plugin_for("tape:///", se.protocols[0].extra)
    assert isinstance(plugin, TapePlugin)
    return plugin


async def tape_file_to_copy(database: AsyncDatabase[Document], tmp_path: Path) -> StorageElement:
    """/vo/raw/f only on tape SE TAPE, and a transfer of it to disk SE DST queued; returns TAPE."""
    tape, dst = tape_se("TAPE", tmp_path / "t", stage_delay_s=0.2), disk_se("DST", tmp_path / "dst")
    await add_ses(database, tape, dst)
    await put_files(database, [tape], ["/vo/raw/f"])
    await queueing.submit_transfers(database, [{"lfn": "/vo/raw/f", "dest_se": "DST"}], requester="t")
    return tape


async def test_a_transfer_from_tape_releases_its_own_pin_after_the_copy_and_leaves_a_stage_pin(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = await tape_file_to_copy(database, tmp_path)
    fast = fast_settings(settings)
    worker = TransferWorker(fast, database)
    await worker.run(max_cycles=1)  # parks the transfer in staging under a bring-online of its own
    await queueing.submit(database, "stage", [{"lfn": "/vo/raw/f", "dest_se": "TAPE"}], requester="u")
    await run_until_drained(database, worker, Stager(fast, database), timeout_s=30)
    transfer = await database[rq.REQUESTS].find_one({"kind": "transfer"})
    staged = await database[rq.REQUESTS].find_one({"kind": "stage"})
    assert transfer is not None and staged is not None
    assert transfer["state"] == "done" and staged["state"] == "done"
    assert transfer["stage"]["request_id"] != staged["stage"]["request_id"]
    plugin, url = _tape_plugin(tape), staged["stage"]["url"]
    assert set(plugin.pins.live(url.removeprefix("tape://"))) == {staged["stage"]["request_id"]}
    assert await plugin.is_online(url)


async def test_a_transfer_from_tape_that_fails_for_good_releases_its_pin(
    database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = await tape_file_to_copy(database, tmp_path)
    await database["files"].update_one({"_id": "/vo/raw/f"}, {"$set": {"adler32": "00000001"}})  # tape copy "bad"
    fast = fast_settings(settings)
    await run_until_drained(database, TransferWorker(fast, database), Stager(fast, database), timeout_s=30)
    transfer = await database[rq.REQUESTS].find_one({})
    assert transfer is not None and transfer["state"] == "failed" and transfer["error_class"] == "checksum_mismatch"
    plugin, url = _tape_plugin(tape), transfer["stage"]["url"]
    assert plugin.pins.live(url.removeprefix("tape://")) == {} and not await plugin.is_online(url)


async def file_on_tape(database: AsyncDatabase[Document], tmp_path: Path, *, stage_delay_s: float) -> StorageElement:
    """/cta/raw/f on tape SE TAPE only; returns TAPE."""
    tape = tape_se("TAPE", tmp_path / "t", stage_delay_s=stage_delay_s)
    await add_ses(database, tape)
    await put_files(database, [tape], ["/cta/raw/f"])
    return tape


async def test_a_user_stages_with_a_lifetime_and_releases_through_the_cli(
    api: RunningApi, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = await file_on_tape(database, tmp_path, stage_delay_s=0.2)
    alice, bob = (api.token(sub=sub, scopes=("transfers.read", "transfers.write")) for sub in ("alice", "bob"))
    out = await run_cli(api.url, alice, "stage", "--se", "TAPE", "--lifetime", "600", "--json", "/cta/raw/f")
    assert out.returncode == 0, out.stderr
    request_id = json.loads(out.stdout)["successful"]["/cta/raw/f"]
    early = await run_cli(api.url, alice, "requests", "release", request_id, "--json")
    assert json.loads(early.stdout) == {"release_asked": 0}  # not staged yet: nothing to release
    stager = Stager(fast_settings(settings), database)
    await run_until_drained(database, stager, timeout_s=30)
    staged = await database[rq.REQUESTS].find_one({"_id": request_id})
    assert staged is not None and staged["state"] == "done" and staged["pin_lifetime_s"] == 600
    plugin, url = _tape_plugin(tape), staged["stage"]["url"]
    expires = plugin.pins.live(url.removeprefix("tape://"))[staged["stage"]["request_id"]]
    assert 590 < expires - time.time() <= 600
    by_bob = await run_cli(api.url, bob, "requests", "release", request_id, "--json")
    assert json.loads(by_bob.stdout) == {"release_asked": 0}  # not bob's
    out = await run_cli(api.url, alice, "requests", "release", request_id)
    assert out.returncode == 0 and "asked to release 1" in out.stdout, out.stderr
    await Stager(fast_settings(settings), database).run(max_cycles=1)
    released = await database[rq.REQUESTS].find_one({"_id": request_id})
    assert released is not None and released["release"] == "released" and not await plugin.is_online(url)


async def test_bad_stage_lifetimes_and_empty_releases_are_refused(api: RunningApi, database: AsyncDatabase[Document],
                                                                   tmp_path: Path) -> None:
    await add_ses(database, tape_se("TAPE", tmp_path / "t"))
    await put_files(database, [], ["/cta/raw/f"])
    token = api.token(scopes=("transfers.read", "transfers.write"))
    short = await run_cli(api.url, token, "stage", "--se", "TAPE", "--lifetime", "5", "/cta/raw/f")
    assert short.returncode == 2 and "--lifetime" in short.stderr
    async with api.client(token) as client:
        for lifetime in ("long", 10, 10**9):
            with pytest.raises(InvalidInput, match="pin_lifetime_s"):
                await client.request("POST", "/requests/stages",
                                     json_body={"lfns": ["/cta/raw/f"], "se": "TAPE", "pin_lifetime_s": lifetime})
        with pytest.raises(InvalidInput, match="ids or a submission"):
            await client.release_requests([])
        assert await client.list_requests() == []


async def test_cancelling_a_request_while_its_file_is_staged_stops_the_staging(
    api: RunningApi, database: AsyncDatabase[Document], settings: Settings, tmp_path: Path,
) -> None:
    tape = await file_on_tape(database, tmp_path, stage_delay_s=1.0)
    async with api.client(api.token(scopes=("transfers.read", "transfers.write"))) as alice:
        request_id = (await alice.stage(["/cta/raw/f"], "TAPE"))["successful"]["/cta/raw/f"]
        await Stager(fast_settings(settings), database).run(max_cycles=1)
        staging = await alice.get_request(request_id)
        assert staging["state"] == "staging"
        assert await alice.cancel_requests([request_id]) == 1
    await Stager(fast_settings(settings), database).run(max_cycles=1)
    cancelled = await database[rq.REQUESTS].find_one({"_id": request_id})
    assert cancelled is not None and (cancelled["state"], cancelled["release"]) == ("cancelled", "released")
    plugin, url = _tape_plugin(tape), staging["stage"]["url"]
    await asyncio.sleep(1.2)  # past the drive time: the staging would be over by now
    assert await plugin.poll_bring_online(staging["stage"]["request_id"]) == {url: "released"}
    assert not await plugin.is_online(url) and plugin.pins.live(url.removeprefix("tape://")) == {}
