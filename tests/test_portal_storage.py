"""Portal pages for SEs, sites and accounting: usage and switches (admins only flip them), and
the accounting tables as CSV."""

from __future__ import annotations

import csv
import io

from cairn.sdk import Client
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid
from tests.fixtures.portal import PortalFactory

READER = ("catalogue.read",)


async def stored(admin: Client, n: int) -> None:
    await admin.mkdir("/cta/acc", mode=0o755)
    await admin.register_files([{"lfn": f"/cta/acc/f{i}", "size": 1000, "adler32": "00000001",
                                 "replicas": [{"se": "SITE-A-DISK"}]} for i in range(n)])


async def test_the_se_list_shows_usage_and_switches(api: RunningApi, grid: Grid, admin: Client,
                                                    portal: PortalFactory) -> None:
    await stored(admin, 3)
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/ses")
        assert page.status == 200
        assert '<a href="/ui/ses/SITE-A-DISK">SITE-A-DISK</a></td>\n<td><a href="/ui/sites/SITE-A">' in page.text
        assert "<td>3</td><td>3000</td>" in page.text
        only_b = await alice.get("/ui/ses", params={"site": "SITE-B"})
        assert "SITE-B-DISK" in only_b.text and "SITE-A-DISK" not in only_b.text
    async with portal(api.token(scopes=("jobs.read",))) as outsider:
        assert (await outsider.get("/ui/ses")).status == 403


async def test_only_an_admin_switches_an_se(api: RunningApi, grid: Grid, admin: Client,
                                            portal: PortalFactory) -> None:
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/ses/SITE-B-DISK")
        assert page.status == 200 and 'id="save-switches"' not in page.text
        refused = await alice.post("/ui/ses/SITE-B-DISK/switches", {"read_enabled": "on"})
        assert refused.status == 403
    assert (await admin.get_se("SITE-B-DISK"))["write_enabled"] is True
    async with portal(api.admin_token) as root:
        await root.get("/ui/ses/SITE-B-DISK")
        page = await root.post("/ui/ses/SITE-B-DISK/switches", {"read_enabled": "on", "delete_enabled": "on"})
        assert page.status == 200 and 'id="write_enabled"  >' in page.text
    se = await admin.get_se("SITE-B-DISK")
    assert (se["read_enabled"], se["write_enabled"], se["delete_enabled"]) == (True, False, True)


async def test_a_site_page_lists_its_ses(api: RunningApi, grid: Grid, admin: Client, portal: PortalFactory) -> None:
    await admin.put_site("SITE-C", description="third site")
    async with portal(api.token(scopes=READER)) as alice:
        page = await alice.get("/ui/sites/SITE-C")
        assert page.status == 200 and "third site" in page.text and "SITE-C-DISK" in page.text
        assert (await alice.get("/ui/sites/NOWHERE")).status == 404


async def test_accounting_exports_csv_and_shows_only_my_accounts(
    api: RunningApi, grid: Grid, admin: Client, portal: PortalFactory,
) -> None:
    await stored(admin, 2)
    await admin.set_quota("alice", "SITE-B-DISK", 4000)
    await admin.set_quota("bob", "SITE-B-DISK", 9000)
    async with portal(api.token(scopes=(*READER, "rules.read"))) as alice:
        page = await alice.get("/ui/accounting")
        assert page.status == 200 and 'id="se-plot"' in page.text
        ses = list(csv.DictReader(io.StringIO((await alice.get("/ui/accounting.csv?table=ses")).text)))
        assert {"se": "SITE-A-DISK", "replicas": "2", "bytes": "2000"} in ses
        accounts = list(csv.DictReader(io.StringIO((await alice.get("/ui/accounting.csv?table=accounts")).text)))
        assert [(r["account"], r["quota_bytes"]) for r in accounts] == [("alice", "4000")]
        assert (await alice.get("/ui/accounting.csv?table=nope")).status == 400
    async with portal(api.admin_token) as root:
        accounts = list(csv.DictReader(io.StringIO((await root.get("/ui/accounting.csv?table=accounts")).text)))
        assert {r["account"] for r in accounts} == {"alice", "bob"}
    async with portal(api.token(scopes=READER)) as reader:
        assert (await reader.get("/ui/accounting")).status == 403
