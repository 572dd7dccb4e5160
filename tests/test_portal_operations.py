"""Portal pages for operations: pilots beside their jobs, productions and transformations with
their progress, and accounting by activity over time — each through its REST route's policy and
functions: status, what a user may see, paging, and the shareable URL of each view."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from productions.daemons import TransformationFeeder, TransformationTasks
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid, check_all
from tests.fixtures.portal import PortalFactory
from tests.fixtures.transfers import transfers_by_activity
from wms import matching, pilot_records
from wms.config import WmsSettings

JOBS = ("jobs.read", "jobs.write")
USER = ("jobs.read", "jobs.write", "catalogue.read", "catalogue.write")
PILOTS = [f"SITE-A.batch.p{i}" for i in range(5)]


def names(text: str, pattern: str) -> list[str]:
    return re.findall(pattern, text)


async def pilots_with_jobs(api: RunningApi, grid: Grid, config: WmsSettings) -> dict[str, list[str]]:
    """Five pilots at SITE-A (p3 and p4 at queue 'long', p4 failed); p0 ran two jobs of alice and
    one of bob, matched through the matcher as a pilot takes them."""
    await pilot_records.record_intents(grid.db, [{"_id": n, "site": "SITE-A", "queue": "long" if n[-1] in "34"
                                                  else "batch", "backend": "local"} for n in PILOTS])
    for i, name in enumerate(PILOTS):
        await pilot_records.set_submitted(grid.db, name, f"batch-{i}")
    await pilot_records.set_state(grid.db, PILOTS[4], "failed", exit_code=3, reason="node died")
    owned: dict[str, list[str]] = {}
    for who, count in (("alice", 2), ("bob", 1)):
        async with api.client(api.token(sub=who, scopes=JOBS)) as sdk:
            owned[who] = await sdk.submit_jobs([{"executable": "/bin/true", "name": f"{who}{i}"} for i in range(count)])
    await check_all(grid.db, config)
    for _ in range(3):
        assert await matching.match(grid.db, matching.PilotOffer(pilot=PILOTS[0], site="SITE-A")) is not None
    return owned


async def test_the_pilot_list_pages_newest_first_and_filters(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, portal: PortalFactory,
) -> None:
    await pilots_with_jobs(api, grid, wms_config)
    async with portal(api.token(scopes=JOBS)) as alice:
        seen: list[str] = []
        url, params = "/ui/pilots", {"limit": "2"}
        while True:
            listing = await alice.get(url, params=params)
            assert listing.status == 200
            found = names(listing.text, r'<a href="/ui/pilots/([^"?]+)">')
            assert len(found) <= 2
            seen += found
            more = re.search(r'id="next" href="([^"]+)"', listing.text)
            if more is None:
                break
            url, params = more.group(1).replace("&amp;", "&"), {}
        assert sorted(seen) == PILOTS and len(seen) == len(set(seen))  # every pilot once, across 3 pages
        long = await alice.get("/ui/pilots", params={"queue": "long"})
        assert sorted(names(long.text, r'<a href="/ui/pilots/([^"?]+)">')) == PILOTS[3:]
        failed = await alice.get("/ui/pilots", params={"state": "failed", "site": "SITE-A"})
        assert names(failed.text, r'<a href="/ui/pilots/([^"?]+)">') == [PILOTS[4]] and "node died" in failed.text
        assert "batch-4" in failed.text and 'selected>failed' in failed.text  # the filter shows in the form
        elsewhere = await alice.get("/ui/pilots", params={"site": "SITE-B"})
        assert "no pilots" in elsewhere.text
        assert (await alice.get("/ui/pilots", params={"state": "flying"})).status == 400
        assert (await alice.get("/ui/pilots", params={"after": "nobody"})).status == 404
    async with portal(api.token(scopes=("catalogue.read",))) as reader:
        refused = await reader.get("/ui/pilots")
        assert refused.status == 403 and "jobs.read" in refused.text
        assert (await reader.get(f"/ui/pilots/{PILOTS[0]}")).status == 403


async def test_a_pilot_shows_the_jobs_it_ran_that_the_user_may_see(
    api: RunningApi, grid: Grid, wms_config: WmsSettings, portal: PortalFactory,
) -> None:
    owned = await pilots_with_jobs(api, grid, wms_config)
    async with portal(api.token(scopes=JOBS)) as alice:
        pilot = await alice.get(f"/ui/pilots/{PILOTS[0]}")
        assert pilot.status == 200 and "batch-0" in pilot.text and "SITE-A" in pilot.text
        shown = names(pilot.text, r'<a href="/ui/jobs/([^"]+)">')
        assert sorted(shown) == sorted(owned["alice"]) and "only yours" in pilot.text
        first = await alice.get(f"/ui/pilots/{PILOTS[0]}", params={"limit": "1"})
        [one] = names(first.text, r'<a href="/ui/jobs/([^"]+)">')
        rest = await alice.get(f"/ui/pilots/{PILOTS[0]}", params={"limit": "1", "after": one})
        assert names(rest.text, r'<a href="/ui/jobs/([^"]+)">') == [j for j in owned["alice"] if j != one]
        assert 'id="next"' in first.text and 'id="next"' not in rest.text
        job = await alice.get(f"/ui/jobs/{owned['alice'][0]}")
        assert job.status == 200 and f'href="/ui/pilots/{PILOTS[0]}"' in job.text and "batch-0" in job.text
        assert (await alice.get("/ui/pilots/SITE-A.batch.nobody")).status == 404
    async with portal(api.admin_token) as root:
        every = await root.get(f"/ui/pilots/{PILOTS[0]}")
        assert sorted(names(every.text, r'<a href="/ui/jobs/([^"]+)">')) == sorted(owned["alice"] + owned["bob"])
        assert "no jobs you may see" in (await root.get(f"/ui/pilots/{PILOTS[1]}")).text


def step(name: str, query: str | None, out_type: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "job": {"executable": "/bin/true", "outputs": [
        {"path": "o", "lfn": f"/cta/{name}/%(task)s", "se": "SITE-A-DISK", "meta": {"type": out_type}}]}, **extra}
    if query is None:
        spec.update(type="mc", max_tasks=1)
    else:
        spec.update(input_query=query, input_path="/cta")
    return spec


async def test_a_transformation_shows_its_progress_and_pages_files_and_tasks(
    api: RunningApi, grid: Grid, portal: PortalFactory,
) -> None:
    for i in range(7):
        await grid.add_file(f"/cta/raw/{i}.raw", b"x", ["SITE-A-DISK"], meta={"type": "raw"})
    async with api.client(api.token(scopes=USER)) as sdk:
        tid = (await sdk.add_transformation({**step("t", "type=raw", "out"), "grouping": {"count": 3}}))["id"]
        made = await sdk.add_production({"name": "chain", "steps": [step("sim", None, "sim"),
                                                                     step("reco", "type=sim", "dl1")]})
    for daemon in (TransformationFeeder(grid.db), TransformationTasks(grid.db)):
        await daemon.run_once()
    async with portal(api.token(scopes=JOBS)) as alice:
        page = await alice.get(f"/ui/transformations/{tid}")
        assert page.status == 200 and "0 of 7 files processed" in page.text  # 2 tasks of 3 assigned
        plotted = re.search(r'cairnBars\("files-plot", \[[^\]]*\], (\[[^\]]*\])', page.text)
        assert plotted is not None
        counts = json.loads(plotted.group(1))
        assert counts == [1, 6, 0, 0, 0]  # the plot's series: unused, assigned, processed, problematic, removed
        first = await alice.get(f"/ui/transformations/{tid}", params={"file_status": "assigned", "limit": "4"})
        lfns = names(first.text, r'<tr class="tfile"><td><a [^>]+>([^<]+)</a>')
        assert len(lfns) == 4 and 'id="next-files"' in first.text
        rest = await alice.get(f"/ui/transformations/{tid}", params={"file_status": "assigned", "limit": "4",
                                                                     "after": lfns[-1]})
        assert len(names(rest.text, r'<tr class="tfile">')) == 2 and 'id="next-files"' not in rest.text
        tasks = await alice.get(f"/ui/transformations/{tid}", params={"task_state": "submitted", "limit": "1"})
        assert len(names(tasks.text, r'<tr class="task">')) == 1 and "after_task=1" in tasks.text
        assert (await alice.get(f"/ui/transformations/{tid}", params={"file_status": "lost"})).status == 400
        listing = await alice.get("/ui/productions")
        assert f'href="/ui/transformations/{tid}"' in listing.text
        assert f'href="/ui/productions/{made["id"]}"' in listing.text
        chain = await alice.get(f"/ui/productions/{made['id']}")
        assert chain.status == 200 and ">sim</a>" in chain.text and ">reco</a>" in chain.text
        assert (await alice.get("/ui/productions", params={"owner": "bob"})).status == 403
    async with portal(api.token(sub="bob", scopes=JOBS)) as bob:
        assert (await bob.get(f"/ui/transformations/{tid}")).status == 404
        assert (await bob.get(f"/ui/productions/{made['id']}")).status == 404
        assert tid not in (await bob.get("/ui/productions")).text
    async with portal(api.admin_token) as root:
        assert tid in (await root.get("/ui/productions", params={"owner": "alice"})).text
        assert (await root.get("/ui/transformations/nope")).status == 404


async def test_accounting_counts_requests_by_activity_over_time(
    api: RunningApi, database: AsyncDatabase[Document], portal: PortalFactory,
) -> None:
    await transfers_by_activity(database)
    async with portal(api.token(scopes=("catalogue.read", "rules.read", "transfers.read"))) as operator:
        page = await operator.get("/ui/accounting", params={"hours": "6", "step_hours": "2"})
        assert page.status == 200
        assert "<td>reprocessing</td><td>2</td><td>1</td><td>4500000</td>" in page.text
        assert "<td>user</td><td>2</td><td>0</td><td>13500000</td>" in page.text
        assert 'table=activity&hours=6&step_hours=2' in page.text  # the CSV link keeps the view
        series = json.loads((await operator.get("/ui/accounting/activity", params={"hours": "6",
                                                                                  "step_hours": "2"})).text)
        assert len(series["buckets"]) == 3 and series["buckets"][1] - series["buckets"][0] == 7200
        assert series["activities"]["user"] == {"done": [0, 0, 2], "failed": [0, 0, 0], "mb": [0, 0, 13.5]}
        exported = await operator.get("/ui/accounting.csv", params={"table": "activity", "hours": "6",
                                                                    "step_hours": "2"})
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 6 and {(r["activity"], r["done"], r["failed"]) for r in rows if r["done"] != "0"} == {
            ("reprocessing", "2", "1"), ("user", "2", "0")}
        assert (await operator.get("/ui/accounting/activity", params={"hours": "2000"})).status == 400
    async with portal(api.token(scopes=("catalogue.read", "rules.read"))) as reader:
        page = await reader.get("/ui/accounting")
        assert page.status == 200 and "activity-totals" not in page.text and "se-usage" in page.text
        assert (await reader.get("/ui/accounting/activity")).status == 403
        assert (await reader.get("/ui/accounting.csv", params={"table": "activity"})).status == 403
