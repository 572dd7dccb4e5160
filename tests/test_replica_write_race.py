"""A replica added or removed by several calls at once is counted on its SE's usage once
(`catalogue.replica_writers`): concurrent adds, concurrent removals, adds racing removals,
through the catalogue and through the API and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json

from pymongo.asynchronous.database import AsyncDatabase

from catalogue.files import fetch_files, register_files
from catalogue.namespace import stat
from catalogue.replica_removal import remove_retired, retire_replicas
from catalogue.replica_writers import REPLICA_WRITERS
from catalogue.replicas import add_replicas, overwrite_files, remove_replicas
from catalogue.usage import rebuild, se_usage
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.catalogue import ADMIN
from tests.fixtures.cli import run_cli

SIZE = 1000


async def registered(db: AsyncDatabase[Document], lfns: list[str]) -> None:
    result = await register_files(db, ADMIN, [{"lfn": lfn, "size": SIZE, "adler32": "00000001",
                                               "replicas": [{"se": "CERN-DISK"}]} for lfn in lfns])
    assert not result["failed"], result["failed"]


async def added(db: AsyncDatabase[Document], lfns: list[str], ses: tuple[str, ...]) -> None:
    outcome = await add_replicas(db, [{"lfn": lfn, "se": se} for lfn in lfns for se in ses])
    assert not outcome["failed"], outcome["failed"]


async def usage_by_se(db: AsyncDatabase[Document]) -> dict[str, tuple[int, int]]:
    return {u["se"]: (u["replicas"], u["bytes"]) for u in await se_usage(db)}


async def replicas_on(db: AsyncDatabase[Document], se: str) -> int:
    return await db["files"].count_documents({"replicas.se": se})


async def assert_exact(db: AsyncDatabase[Document]) -> None:
    report = await rebuild(db, fix=False)
    assert report["drifted"] == 0, report["drift"]


async def test_concurrent_adds_of_the_same_replicas_count_each_once(catalogue_db: AsyncDatabase[Document]) -> None:
    db = catalogue_db
    lfns = [f"/vo/add/f{i:03d}" for i in range(200)]
    await registered(db, lfns)
    # Six calls at once over the same replicas (six clients retrying one request), in turns
    # that differ, and a second SE for half of them in the same calls.
    items = [{"lfn": lfn, "se": "DESY-DISK"} for lfn in lfns] + [{"lfn": lfn, "se": "CERN-TAPE"} for lfn in lfns[::2]]
    outcomes = await asyncio.gather(*(add_replicas(db, items[k:] + items[:k]) for k in range(0, 300, 50)))
    assert all(not outcome["failed"] for outcome in outcomes)
    assert await replicas_on(db, "DESY-DISK") == 200 and await replicas_on(db, "CERN-TAPE") == 100
    assert await usage_by_se(db) == {"CERN-DISK": (200, 200 * SIZE), "DESY-DISK": (200, 200 * SIZE),
                                     "CERN-TAPE": (100, 100 * SIZE)}
    await assert_exact(db)
    shown = await stat(db, ADMIN, lfns[0])
    assert REPLICA_WRITERS not in shown
    assert {r["se"] for r in shown["replicas"]} == {"CERN-DISK", "DESY-DISK", "CERN-TAPE"}


async def test_concurrent_removals_of_the_same_replicas_take_each_off_once(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = [f"/vo/pull/f{i:03d}" for i in range(200)]
    await registered(db, lfns)
    await added(db, lfns, ("DESY-DISK", "CERN-TAPE"))
    # Both replicas of a file in one call: each call takes them off in turns, its own way.
    items = [{"lfn": lfn, "se": se} for lfn in lfns for se in ("DESY-DISK", "CERN-TAPE")]
    outcomes = await asyncio.gather(*(remove_replicas(db, items[k:] + items[:k]) for k in range(0, 400, 70)))
    assert all(not outcome["failed"] for outcome in outcomes)
    assert await replicas_on(db, "DESY-DISK") == 0 and await replicas_on(db, "CERN-TAPE") == 0
    assert await usage_by_se(db) == {"CERN-DISK": (200, 200 * SIZE), "DESY-DISK": (0, 0), "CERN-TAPE": (0, 0)}
    await assert_exact(db)


async def test_adds_racing_removals_of_the_same_replicas_leave_usage_exact(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = [f"/vo/both/f{i:03d}" for i in range(150)]
    await registered(db, lfns)
    items = [{"lfn": lfn, "se": "DESY-DISK"} for lfn in lfns]
    for _ in range(3):
        calls = [add_replicas(db, items), remove_replicas(db, items[::-1]), add_replicas(db, items[75:] + items[:75]),
                 remove_replicas(db, items[40:] + items[:40]), add_replicas(db, items)]
        await asyncio.gather(*calls)
        on_se = await replicas_on(db, "DESY-DISK")
        assert (await usage_by_se(db))["DESY-DISK"] == (on_se, on_se * SIZE)
        await assert_exact(db)


async def test_a_removal_racing_the_reaper_over_retired_replicas_takes_each_off_once(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = [f"/vo/reap/f{i:03d}" for i in range(100)]
    await registered(db, lfns)
    await added(db, lfns, ("DESY-DISK",))
    docs = await fetch_files(db, lfns, {"replicas.se": 1, "version": 1})
    plans = {lfn: (doc["version"], [(i, r["se"]) for i, r in enumerate(doc["replicas"]) if r["se"] == "DESY-DISK"])
             for lfn, doc in docs.items()}
    assert await retire_replicas(db, plans) == set(lfns)  # the reaper's first step: retired, with their tokens
    # The reaper removes them while an admin removes the same replicas through the catalogue.
    items = [{"lfn": lfn, "se": "DESY-DISK"} for lfn in lfns]
    _, by_admin = await asyncio.gather(remove_retired(db, [(lfn, "DESY-DISK") for lfn in lfns[::-1]]),
                                       remove_replicas(db, items))
    assert not by_admin["failed"]
    assert await replicas_on(db, "DESY-DISK") == 0
    assert await usage_by_se(db) == {"CERN-DISK": (100, 100 * SIZE), "DESY-DISK": (0, 0)}
    await assert_exact(db)


async def test_overwrites_of_the_same_files_racing_each_other_count_what_each_wrote(
    catalogue_db: AsyncDatabase[Document],
) -> None:
    db = catalogue_db
    lfns = [f"/vo/over/f{i:03d}" for i in range(200)]
    await registered(db, lfns)

    def content(size: int, se: str) -> dict[str, Document]:
        replica = {"se": se, "url": f"root://x/{se}/{size}", "status": "available"}
        return {lfn: {"size": size, "adler32": f"{size:08x}", "replicas": [replica]} for lfn in lfns}

    # Later attempts of a job write its outputs again at once, each its own content; in three waves.
    sizes = (2000, 3000, 4000, 5000)
    for _ in range(3):
        done = await asyncio.gather(*(overwrite_files(db, content(size, se))
                                      for size in sizes for se in ("DESY-DISK", "CERN-TAPE")))
        assert set().union(*done) == set(lfns)
        await assert_exact(db)
    docs = await fetch_files(db, lfns, {"size": 1, "replicas": 1})
    assert all(len(doc["replicas"]) == 1 and doc["replicas"][0]["url"].endswith(f"/{doc['size']}")
               for doc in docs.values())
    expected: dict[str, list[int]] = {"CERN-DISK": [0, 0], "DESY-DISK": [0, 0], "CERN-TAPE": [0, 0]}
    for doc in docs.values():
        expected[doc["replicas"][0]["se"]][0] += 1
        expected[doc["replicas"][0]["se"]][1] += doc["size"]
    assert await usage_by_se(db) == {se: (count, size) for se, (count, size) in expected.items()}


async def test_replica_writes_racing_through_the_api_and_the_cli_leave_usage_exact(api: RunningApi) -> None:
    lfns = [f"/vo/e2e-rep/f{i:03d}" for i in range(120)]
    async with api.client() as admin:
        await admin.put_se({"name": "DESY-DISK", "site": "DESY",
                            "protocols": [{"scheme": "root", "host": "xrd.desy.de", "prefix": "/data"}]})
        await admin.mkdir("/vo/e2e-rep", parents=True)
        done = await admin.register_files([{"lfn": lfn, "size": SIZE, "adler32": "00000001"} for lfn in lfns])
        assert not done["failed"]
    items = [{"lfn": lfn, "se": "DESY-DISK"} for lfn in lfns]
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(api.client()) for _ in range(5)]
        # Five clients add the same replicas while `cairn register` adds some of them again.
        adds = [client.add_replicas(items[k:] + items[:k])
                for k, client in zip(range(0, 120, 24), clients, strict=True)]
        clis = [run_cli(api.url, api.admin_token, "register", lfn, "--size", str(SIZE), "--adler32", "00000001",
                        "--se", "DESY-DISK", "--json") for lfn in lfns[::12]]
        answers, runs = await asyncio.gather(asyncio.gather(*adds), asyncio.gather(*clis))
        assert all(not answer["failed"] for answer in answers) and all(r.returncode == 0 for r in runs)
        usage = await run_cli(api.url, api.admin_token, "usage", "ses", "--json")
        assert {u["se"]: u["replicas"] for u in json.loads(usage.stdout)}.get("DESY-DISK") == len(lfns), usage.stdout
        # Then they all take them off again.
        removals = await asyncio.gather(*(client.remove_replicas(items[k:] + items[:k])
                                          for k, client in zip(range(0, 120, 24), clients, strict=True)))
        assert all(not answer["failed"] for answer in removals)
    usage = await run_cli(api.url, api.admin_token, "usage", "ses", "--json")
    assert {u["se"]: u["replicas"] for u in json.loads(usage.stdout)}.get("DESY-DISK") == 0, usage.stdout
    report = await run_cli(api.url, api.admin_token, "usage", "rebuild", "--dry-run", "--json")
    assert json.loads(report.stdout)["drifted"] == 0, report.stdout
