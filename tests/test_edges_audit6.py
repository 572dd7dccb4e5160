"""Sixth audit, edges: bad input to the portal's rule wizard, and the client's saved settings."""

from __future__ import annotations

from cairn.sdk import Client
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid
from tests.fixtures.portal import PortalFactory

RULES = ("catalogue.read", "rules.read", "rules.write")


async def test_the_wizard_refuses_a_lifetime_beyond_any_number_of_days(
    api: RunningApi, grid: Grid, admin: Client, portal: PortalFactory,
) -> None:
    await admin.mkdir("/cta/mc", parents=True, mode=0o755)
    await admin.register_files([{"lfn": "/cta/mc/f.root", "size": 1, "adler32": "00000001",
                                 "replicas": [{"se": "SITE-A-DISK"}]}])
    async with portal(api.token(scopes=RULES)) as alice:
        await alice.get("/ui/rule-wizard")
        for days in ("inf", "-inf", "1e400", "nan"):
            page = await alice.post("/ui/rule-wizard", {"did": "/cta/mc/f.root", "copies": "1",
                                                        "expression": "SITE-B-DISK", "lifetime_days": days})
            assert page.status == 400, (days, page.status, page.text[:200])
            assert "lifetime" in page.text
    assert await admin.list_rules() == []
