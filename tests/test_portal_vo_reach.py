"""Portal pages keep a VO's caller to what the API gives it: another VO's productions and
transformations, installation-wide transfer statistics and other VOs' SEs are not shown on a
page when the matching REST route hides or refuses them."""

from __future__ import annotations

from tests.fixtures.authz import World
from tests.fixtures.portal import PortalFactory
from tests.test_authz_matrix import MATRIX_IDS, bobs_objects

INSTALLATION_VIEWS = ("/ui/transfers", "/ui/transfers/series", "/ui/accounting/activity")


async def test_a_vo_admin_lists_only_its_vos_productions_and_transformations(
    vo_world: World, portal: PortalFactory,
) -> None:
    await bobs_objects(vo_world)  # lhcb's bob makes a transformation and a production
    status, api_view = await vo_world.call("ctaadmin", "GET", "/transformations")
    assert status == 200 and api_view == []
    async with portal(vo_world.tokens["ctaadmin"]) as ctaadmin:
        listed = await ctaadmin.get("/ui/productions")
        asked = await ctaadmin.get("/ui/productions", params={"owner": "lhcb:bob"})
    async with portal(vo_world.tokens["lhcbadmin"]) as lhcbadmin:
        own = await lhcbadmin.get("/ui/productions")
    for page in (listed, asked):
        assert page.status == 200
        assert MATRIX_IDS["transformation"] not in page.text and MATRIX_IDS["production"] not in page.text
    assert MATRIX_IDS["transformation"] in own.text and MATRIX_IDS["production"] in own.text


async def test_installation_transfer_views_are_refused_to_a_vo_among_several(
    vo_world: World, portal: PortalFactory,
) -> None:
    status, _ = await vo_world.call("eve", "GET", "/transfers/stats")
    assert status == 403
    async with portal(vo_world.tokens["eve"]) as eve:
        refused = {url: (await eve.get(url)).status for url in INSTALLATION_VIEWS}
        exported = await eve.get("/ui/accounting.csv", params={"table": "activity"})
        accounting = await eve.get("/ui/accounting")
    async with portal(vo_world.tokens["admin"]) as admin:
        allowed = {url: (await admin.get(url)).status for url in INSTALLATION_VIEWS}
    assert refused == dict.fromkeys(INSTALLATION_VIEWS, 403)
    assert exported.status == 403
    assert accounting.status == 200 and 'id="activity-totals"' not in accounting.text
    assert allowed == dict.fromkeys(INSTALLATION_VIEWS, 200)


async def test_the_rule_wizard_preview_shows_only_the_ses_of_the_callers_vo(
    vo_world: World, portal: PortalFactory,
) -> None:
    status, api_view = await vo_world.call("eve", "GET", "/expressions/resolve", params={"expression": "kind=disk"})
    assert status == 200 and api_view["ses"] == ["DISK1", "DISK3"]
    async with portal(vo_world.tokens["eve"]) as eve:
        preview = await eve.get("/ui/rule-wizard/preview", params={"expression": "kind=disk|kind=tape"})
    assert preview.status == 200 and "DISK3" in preview.text
    assert "DISK2" not in preview.text and "TAPE1" not in preview.text
