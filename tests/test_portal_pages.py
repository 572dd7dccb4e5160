"""Portal pages: each answers through the REST routes' policies and functions — status, what a
user may see, paging — for the browser, queries, rules, transfers, jobs and the dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.sdk import Client
from kernel.db import Document
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid
from tests.fixtures.portal import PortalFactory
from transfers import link_stats

READER = ("catalogue.read",)
RULES = ("catalogue.read", "rules.read", "rules.write")
JOBS = ("jobs.read", "jobs.write")


@pytest.fixture
async def tree(api: RunningApi, grid: Grid, admin: Client) -> AsyncIterator[Client]:
    """/cta/mc/run1 with 25 files (run=0..24) on SITE-A-DISK, and /cta/secret that only root may read."""
    await admin.mkdir("/cta/mc/run1", parents=True, mode=0o755)
    await admin.mkdir("/cta/secret", mode=0o700)
    files = [{"lfn": f"/cta/mc/run1/f{i:02d}.root", "size": 100 + i, "adler32": "0000000%x" % (i % 16),
              "replicas": [{"se": "SITE-A-DISK"}]} for i in range(25)]
    result = await admin.register_files(files)
    assert not result["failed"], result
    await admin.register_files([{"lfn": "/cta/secret/hidden.root", "size": 1, "adler32": "00000001",
                                 "replicas": [{"se": "SITE-A-DISK"}]}])
    for i in range(25):
        await admin.set_metadata(f"/cta/mc/run1/f{i:02d}.root", {"run": i})
    await admin.set_metadata("/cta/mc", {"particle": "proton"})
    yield admin


def rows(text: str, marker: str) -> int:
    return text.count(marker)


async def test_the_browser_pages_a_directory_by_name(api: RunningApi, tree: Client, portal: PortalFactory) -> None:
    async with portal(api.token(scopes=READER)) as alice:
        first = await alice.get("/ui/browse", params={"path": "/cta/mc/run1", "limit": "10"})
        assert first.status == 200 and rows(first.text, 'class="file"') == 10
        assert "f00.root" in first.text and "f10.root" not in first.text
        assert 'href="/ui/browse?path=/cta/mc/run1&after=f09.root&limit=10"' in first.text
        second = await alice.get("/ui/browse", params={"path": "/cta/mc/run1", "after": "f09.root", "limit": "10"})
        assert rows(second.text, 'class="file"') == 10 and "f10.root" in second.text and "f09.root" not in second.text
        last = await alice.get("/ui/browse", params={"path": "/cta/mc/run1", "after": "f19.root", "limit": "10"})
        assert rows(last.text, 'class="file"') == 5 and 'id="next"' not in last.text


async def test_a_directory_the_user_may_not_read_is_not_shown(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/browse", params={"path": "/cta/secret"})
        assert page.status in (403, 404) and "hidden.root" not in page.text
        missing = await alice.get("/ui/file", params={"path": "/cta/secret/hidden.root"})
        nothing = await alice.get("/ui/file", params={"path": "/cta/secret/nothing.root"})
        assert missing.status == nothing.status != 200  # as in the API: traversal is checked before existence
    async with portal(api.admin_token) as root:
        assert "hidden.root" in (await root.get("/ui/browse", params={"path": "/cta/secret"})).text


async def test_a_token_without_catalogue_read_cannot_browse(api: RunningApi, tree: Client,
                                                            portal: PortalFactory) -> None:
    async with portal(api.token(scopes=JOBS)) as alice:
        page = await alice.get("/ui/browse", params={"path": "/cta"})
        assert page.status == 403 and "catalogue.read" in page.text


async def test_the_file_page_shows_replicas_and_inherited_metadata(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/file", params={"path": "/cta/mc/run1/f03.root"})
        assert page.status == 200 and "SITE-A-DISK" in page.text
        assert "<td>particle</td><td>proton</td><td>/cta/mc</td>" in page.text
        assert "<td>run</td><td>3</td>" in page.text


async def test_the_query_page_runs_the_find_language_and_pages(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/find", params={"q": "run>=5 run<20 particle=proton", "path": "/cta",
                                                   "limit": "10"})
        assert page.status == 200 and rows(page.text, "/ui/file?path=") == 10
        assert "f05.root" in page.text and 'id="next"' in page.text
        rest = await alice.get("/ui/find", params={"q": "run>=5 run<20 particle=proton", "path": "/cta",
                                                   "after": "/cta/mc/run1/f14.root", "limit": "10"})
        assert rows(rest.text, "/ui/file?path=") == 5 and 'id="next"' not in rest.text
        bad = await alice.get("/ui/find", params={"q": "run>=", "path": "/cta"})
        assert bad.status == 400 and "error" in bad.text
        hidden = await alice.get("/ui/find", params={"q": "name=*.root", "path": "/cta"})
        assert "hidden.root" not in hidden.text


async def test_the_rule_wizard_previews_ses_and_quota_then_creates_the_rule(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    await tree.set_quota("alice", "SITE-B-DISK", 5000)
    async with portal(api.token(scopes=RULES)) as alice:
        wizard = await alice.get("/ui/rule-wizard", params={"did": "/cta/mc/run1/f01.root"})
        assert wizard.status == 200 and 'value="/cta/mc/run1/f01.root"' in wizard.text
        preview = await alice.get("/ui/rule-wizard/preview", params={"expression": "SITE-B-DISK|SITE-C-DISK"},
                                  headers={"HX-Request": "true"})
        assert "<td>SITE-B-DISK</td>" in preview.text and "5000 bytes" in preview.text
        assert "<td>SITE-C-DISK</td>" in preview.text and "unlimited" in preview.text
        broken = await alice.get("/ui/rule-wizard/preview", params={"expression": "tier=1&("})
        assert 'id="preview-error"' in broken.text
        created = await alice.post("/ui/rule-wizard", {"did": "/cta/mc/run1/f01.root", "copies": "1",
                                                       "expression": "SITE-B-DISK", "lifetime_days": "2"})
        assert created.status == 200 and "/ui/rules/" in created.url and 'id="rule-state"' in created.text
        rules = await tree.list_rules()
        assert [(r["did"], r["account"]) for r in rules] == [("/cta/mc/run1/f01.root", "alice")]
        listing = await alice.get("/ui/rules", params={"account": "alice"})
        assert rules[0]["id"] in listing.text


async def test_the_wizard_refuses_a_bad_rule_with_the_reason_and_creates_nothing(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    async with portal(api.token(scopes=RULES)) as alice:
        await alice.get("/ui/rule-wizard")
        hidden = await alice.post("/ui/rule-wizard", {"did": "/cta/secret/hidden.root", "copies": "1",
                                                      "expression": "SITE-B-DISK"})
        assert hidden.status == 404 and "does not exist" in hidden.text
        many = await alice.post("/ui/rule-wizard", {"did": "/cta/mc/run1/f01.root", "copies": "5",
                                                    "expression": "SITE-B-DISK"})
        assert many.status == 400
        no_csrf = await alice.post("/ui/rule-wizard", {"did": "/cta/mc/run1/f01.root", "copies": "1",
                                                       "expression": "SITE-B-DISK"}, csrf=False)
        assert no_csrf.status == 403
    assert await tree.list_rules() == []
    async with portal(api.token(scopes=READER)) as reader:
        assert (await reader.get("/ui/rule-wizard")).status == 403


async def test_a_rule_page_shows_only_rules_on_files_the_user_may_read(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    secret = await tree.add_rule("/cta/secret/hidden.root", 1, "SITE-B-DISK")
    public = await tree.add_rule("/cta/mc/run1/f02.root", 1, "SITE-B-DISK")
    async with portal(api.token(scopes=RULES)) as alice:
        listing = await alice.get("/ui/rules")
        assert public["id"] in listing.text and secret["id"] not in listing.text
        assert (await alice.get(f"/ui/rules/{secret['id']}")).status == 404
        page = await alice.get(f"/ui/rules/{public['id']}")
        assert page.status == 200 and "/cta/mc/run1/f02.root" in page.text


async def test_the_transfer_matrix_shows_links_and_failures_by_category(
    api: RunningApi, database: AsyncDatabase[Document], portal: PortalFactory,
) -> None:
    await link_stats.record(database, "SITE-A-DISK", "SITE-B-DISK", ok=True, nbytes=4_000_000, seconds=2.0)
    await link_stats.record(database, "SITE-A-DISK", "SITE-C-DISK", ok=False, reason="checksum")
    async with portal(api.token(scopes=("transfers.read",))) as operator:
        page = await operator.get("/ui/transfers")
        assert page.status == 200
        assert "1 done, 0 failed<br>\n2.0 MB/s" in page.text and "0 done, 1 failed" in page.text
        assert "<td>checksum</td><td>1</td>" in page.text
        series = json.loads((await operator.get("/ui/transfers/series", params={"hours": "3"})).text)
        assert len(series["hours"]) == 3 and series["done"][-1] == 1 and series["failed"][-1] == 1
        assert series["mb"][-1] == 4.0 and series["done"][:2] == [0, 0]
        to_c = json.loads((await operator.get("/ui/transfers/series", params={"dest": "SITE-C-DISK"})).text)
        assert (sum(to_c["done"]), sum(to_c["failed"])) == (0, 1)
    async with portal(api.token(scopes=READER)) as reader:
        assert (await reader.get("/ui/transfers")).status == 403
        assert (await reader.get("/ui/transfers/series")).status == 403


async def test_the_job_monitor_kills_selected_jobs_of_their_owner_only(
    api: RunningApi, grid: Grid, portal: PortalFactory,
) -> None:
    async with api.client(api.token(scopes=JOBS)) as sdk:
        ids = await sdk.submit_jobs([{"executable": "/bin/echo", "name": f"j{i}"} for i in range(3)])
    async with portal(api.token(sub="bob", scopes=JOBS)) as bob:
        listing = await bob.get("/ui/jobs")
        assert listing.status == 200 and "j0" not in listing.text
        refused = await bob.post("/ui/jobs/control", [("action", "kill"), ("job", ids[0])])
        assert f"{ids[0]}: job {ids[0]} does not exist" in refused.text and "alice" not in refused.text
        assert (await bob.get(f"/ui/jobs/{ids[0]}")).status == 404
    async with portal(api.token(scopes=JOBS)) as alice:
        listing = await alice.get("/ui/jobs")
        assert all(f'id="select-{i}"' in listing.text for i in ids)
        done = await alice.post("/ui/jobs/control", [("action", "kill"), ("job", ids[0]), ("job", ids[1])])
        assert done.status == 200 and f"{ids[0]}: kill done" in done.text
        killed = await alice.get("/ui/jobs", params={"state": "killed"})
        assert f'id="select-{ids[0]}"' in killed.text and f'id="select-{ids[2]}"' not in killed.text
        job = await alice.get(f"/ui/jobs/{ids[0]}")
        assert job.status == 200 and "killed" in job.text
        assert (await alice.get("/ui/jobs", params={"owner": "bob"})).status == 403
        again = await alice.post("/ui/jobs/control", [("action", "reschedule"), ("job", ids[0]), ("job", ids[2])])
        assert f"{ids[0]}: reschedule done" in again.text and f"{ids[2]}: reschedule done" not in again.text
        assert (await alice.post("/ui/jobs/control", [("action", "nuke"), ("job", ids[2])])).status == 400


async def test_the_dashboard_shows_my_rules_quota_and_failed_jobs(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    await tree.set_quota("alice", "SITE-B-DISK", 5000)
    async with api.client(api.token(scopes=RULES)) as sdk:
        rule = await sdk.add_rule("/cta/mc/run1/f04.root", 1, "SITE-B-DISK")
    async with portal(api.token(scopes=(*RULES, *JOBS))) as alice:
        page = await alice.get("/ui/")
        assert page.status == 200 and rule["id"] in page.text and "<td>SITE-B-DISK</td>" in page.text
        assert 'id="failed-jobs"' in page.text
    async with portal(api.token(scopes=READER)) as reader:
        page = await reader.get("/ui/")
        assert page.status == 200 and 'id="quotas"' not in page.text and 'id="failed-jobs"' not in page.text


async def test_the_job_monitor_pages_newest_first_with_its_filters_in_the_url(
    api: RunningApi, grid: Grid, portal: PortalFactory,
) -> None:
    async with api.client(api.token(scopes=JOBS)) as sdk:
        ids = await sdk.submit_jobs([{"executable": "/bin/echo", "name": f"p{i}"} for i in range(5)])
    async with portal(api.token(scopes=JOBS)) as alice:
        seen: list[str] = []
        url, params = "/ui/jobs", {"state": "received", "limit": "2"}
        for _ in range(5):
            listing = await alice.get(url, params=params)
            assert listing.status == 200
            found = [i for i in ids if f'id="select-{i}"' in listing.text]
            assert 0 < len(found) <= 2
            seen += found
            more = re.search(r'id="next" href="([^"]+)"', listing.text)
            if more is None:
                break
            url, params = more.group(1), {}
            assert "state=received" in url  # the filter travels with the page
        assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
        assert (await alice.get("/ui/jobs", params={"after": "nope"})).status == 404
    async with portal(api.token(sub="bob", scopes=JOBS)) as bob:
        theirs = await bob.get("/ui/jobs")
        assert theirs.status == 200 and not any(f'id="select-{i}"' in theirs.text for i in ids)


async def test_the_rule_list_pages_and_skips_rules_on_files_the_user_may_not_read(
    api: RunningApi, tree: Client, portal: PortalFactory,
) -> None:
    secret = await tree.add_rule("/cta/secret/hidden.root", 1, "SITE-B-DISK")
    public = [(await tree.add_rule(f"/cta/mc/run1/f{i:02d}.root", 1, "SITE-B-DISK"))["id"] for i in range(5)]
    async with portal(api.token(scopes=RULES)) as alice:
        seen: list[str] = []
        url, params = "/ui/rules", {"state": "replicating", "limit": "2"}
        for _ in range(5):
            listing = await alice.get(url, params=params)
            assert listing.status == 200 and secret["id"] not in listing.text
            seen += [i for i in public if f'href="/ui/rules/{i}"' in listing.text]
            more = re.search(r'id="next" href="([^"]+)"', listing.text)
            if more is None:
                break
            url, params = more.group(1), {}
            assert "state=replicating" in url
        assert sorted(seen) == sorted(public) and len(seen) == len(public)
        missing = await alice.get("/ui/rules", params={"after": "nope"})
        hidden = await alice.get("/ui/rules", params={"after": secret["id"]})
        assert missing.status == hidden.status == 404  # a hidden rule is not a cursor either
