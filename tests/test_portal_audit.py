"""Portal pages answer a VO-confined user as the API does (an SE of another VO is missing, usage
per SE is an installation view), and a page size that is not a plain number is a 400."""

from __future__ import annotations

import re

from tests.fixtures.api import RunningApi
from tests.fixtures.authz import World
from tests.fixtures.portal import PortalFactory

USAGE_LINE = "3 replicas, 768 bytes"  # DISK1's usage (both VOs' files), as the SE page shows it
SE_LINK = re.compile(r'<a href="/ui/ses/([^"]+)">')
PAGED = (("/ui/browse", {"path": "/"}), ("/ui/find", {"q": "size > 0", "path": "/"}), ("/ui/jobs", {}),
         ("/ui/rules", {}), ("/ui/pilots", {}), ("/ui/productions", {}), ("/ui/triage", {}))


async def test_an_se_of_another_vo_is_a_missing_se_page(vo_world: World, portal: PortalFactory) -> None:
    async with portal(vo_world.tokens["eve"]) as eve:
        lhcbs = await eve.get("/ui/ses/DISK2")
        missing = await eve.get("/ui/ses/NOSUCH")
        own = await eve.get("/ui/ses/DISK3")
    assert lhcbs.status == missing.status == 404
    assert lhcbs.text.replace("DISK2", "NOSUCH") == missing.text
    assert own.status == 200


async def test_the_se_list_shows_only_the_ses_of_the_callers_vo(vo_world: World, portal: PortalFactory) -> None:
    async with portal(vo_world.tokens["eve"]) as eve:
        page = await eve.get("/ui/ses")
    async with portal(vo_world.tokens["admin"]) as admin:
        everything = await admin.get("/ui/ses")
    assert page.status == 200 and SE_LINK.findall(page.text) == ["DISK1", "DISK3"]
    assert SE_LINK.findall(everything.text) == ["DISK1", "DISK2", "DISK3", "TAPE1"]


async def test_se_pages_leave_out_usage_per_se_for_a_vo_among_several(vo_world: World,
                                                                      portal: PortalFactory) -> None:
    async with portal(vo_world.tokens["eve"]) as eve:
        listed, one, site = await eve.get("/ui/ses"), await eve.get("/ui/ses/DISK1"), await eve.get("/ui/sites/SITE")
    async with portal(vo_world.tokens["admin"]) as admin:
        shown = [await admin.get("/ui/ses"), await admin.get("/ui/ses/DISK1"), await admin.get("/ui/sites/SITE")]
    assert listed.status == one.status == site.status == 200
    assert "<th>replicas</th>" not in listed.text + site.text and USAGE_LINE not in one.text
    assert all("<td>3</td><td>768</td>" in p.text for p in (shown[0], shown[2])) and USAGE_LINE in shown[1].text


async def test_accounting_per_se_is_refused_to_a_vo_among_several(vo_world: World, portal: PortalFactory) -> None:
    async with portal(vo_world.tokens["eve"]) as eve:
        exported = await eve.get("/ui/accounting.csv", params={"table": "ses"})
        accounting = await eve.get("/ui/accounting")
    async with portal(vo_world.tokens["admin"]) as admin:
        everything = await admin.get("/ui/accounting.csv", params={"table": "ses"})
    assert exported.status == 403 and "DISK2" not in exported.text
    assert accounting.status == 200 and 'id="account-usage"' in accounting.text
    assert 'id="se-usage"' not in accounting.text and "DISK2" not in accounting.text
    assert everything.status == 200 and "DISK2," in everything.text


async def test_a_page_size_other_than_ascii_digits_is_a_400_on_every_paged_page(
    api: RunningApi, portal: PortalFactory,
) -> None:
    async with portal(api.admin_token) as root:
        for url, params in PAGED:
            assert (await root.get(url, params={**params, "limit": "5"})).status == 200, url
            for limit in ("²", "٣", "abc", "-1"):
                page = await root.get(url, params={**params, "limit": limit})
                assert page.status == 400 and "limit" in page.text, (url, limit, page.status)
