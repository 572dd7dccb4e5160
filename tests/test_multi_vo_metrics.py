"""`GET /metrics` on an installation of several VOs (issue 14), on tests.fixtures.multi_vo: every
series that counts a VO's things carries `vo`; a global admin sees every VO's, a VO's members
and admins only their VO's; a scrape without a token is refused."""

from __future__ import annotations

import re

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from tests.fixtures.authz import ALICES, World
from tests.fixtures.transfers import fast_settings, run_until_drained
from tests.test_authz_matrix import bobs_objects
from transfers import link_stats
from transfers.worker import TransferWorker


async def scrape(world: World, who: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {world.tokens[who]}"} if who else {}
    async with aiohttp.ClientSession() as session, session.get(f"{world.api.url}/metrics",
                                                               headers=headers) as resp:
        return resp.status, await resp.text()


def vo_labels(text: str) -> set[str]:
    return set(re.findall(r'vo="([^"]*)"', text))


async def some_of_each_vo(world: World) -> None:
    await bobs_objects(world)  # lhcb: rules, a request, a job, ...
    status, answer = await world.call("eve", "POST", "/requests/transfers", {"lfns": [ALICES], "dest_se": "DISK3"})
    assert status == 201 and answer["successful"], answer
    status, answer = await world.call("eve", "POST", "/jobs", {"executable": "/bin/true"})
    assert status == 201, answer
    await run_until_drained(world.db, TransferWorker(fast_settings(world.api.settings), world.db))


async def test_a_global_admin_sees_every_vos_series(vo_world: World) -> None:
    await some_of_each_vo(vo_world)
    status, text = await scrape(vo_world, "admin")
    assert status == 200, text
    assert vo_labels(text) == {"lhcb", "cta"}
    assert 'cairn_transfers_done_total{dest="DISK3",source="DISK1",vo="cta"} 1.0' in text
    assert 'cairn_jobs{state="received",vo="lhcb"} 1.0' in text
    assert 'cairn_jobs{state="received",vo="cta"} 1.0' in text
    assert 'cairn_rules{state="replicating",vo="lhcb"} 2.0' in text
    assert re.search(r'cairn_namespace_files\{vo="lhcb"\} [1-9]', text), text
    assert 'cairn_namespace_files{vo="cta"} 1.0' in text


async def test_a_vos_members_and_admins_see_only_its_series(vo_world: World) -> None:
    await some_of_each_vo(vo_world)
    for who in ("eve", "ctaadmin"):
        status, text = await scrape(vo_world, who)
        assert status == 200, text
        assert vo_labels(text) == {"cta"}, (who, text)
        assert "lhcb" not in text and "DISK2" not in text, (who, text)
        assert 'cairn_transfers_done_total{dest="DISK3",source="DISK1",vo="cta"} 1.0' in text
        assert 'cairn_jobs{state="received",vo="cta"} 1.0' in text
        samples = [line for line in text.splitlines() if line.startswith("cairn_")]
        assert samples and all('vo="cta"' in line for line in samples), samples
    status, text = await scrape(vo_world, "bob")
    assert status == 200 and vo_labels(text) == {"lhcb"}, text
    assert 'cairn_rules{state="replicating",vo="lhcb"} 2.0' in text
    assert "DISK3" not in text


async def test_a_scrape_without_a_token_is_refused_when_several_vos_share_the_installation(
    vo_world: World,
) -> None:
    status, text = await scrape(vo_world, None)
    assert status == 401 and "needs a bearer token" in text, text


async def test_what_a_link_counted_before_it_kept_vos_apart_is_the_local_vos(
    database: AsyncDatabase[Document],
) -> None:
    await database[link_stats.LINK_STATS].insert_one(  # as stored before the per-VO counters
        {"_id": link_stats.link_id("A", "B"), "source": "A", "dest": "B", "done": 3, "bytes": 30, "seconds": 1.0,
         "failed": 1, "failures": {"timeout": 1}})
    await link_stats.record(database, "A", "B", ok=True, nbytes=5, seconds=0.5, vo="c.t.a")
    await link_stats.record(database, "A", "B", ok=False, reason="timeout", vo="c.t.a")
    rows = {r["vo"]: r for r in await link_stats.link_statistics_by_vo(database)}
    assert {vo: (r["done"], r["bytes"], r["failed"], r["failures"]) for vo, r in rows.items()} == {
        "local": (3, 30, 1, {"timeout": 1}), "c.t.a": (1, 5, 1, {"timeout": 1})}
