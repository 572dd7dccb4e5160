"""Bad replicas for triage: listed by LFN one page at a time (admins), over HTTP, the CLI and the
portal, where removing the selected ones takes them out of the catalogue."""

from __future__ import annotations

import json

import pytest

from cairn.sdk import Client
from kernel.errors import Forbidden
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import run_cli
from tests.fixtures.grid import Grid
from tests.fixtures.portal import PortalFactory


async def spoil(admin: Client, n: int) -> list[str]:
    """n files with replicas on SITE-A-DISK and SITE-B-DISK; the SITE-B ones of the even files are bad."""
    await admin.mkdir("/cta/tri", mode=0o755)
    lfns = [f"/cta/tri/f{i:02d}" for i in range(n)]
    await admin.register_files([{"lfn": lfn, "size": 10, "adler32": "00000001",
                                 "replicas": [{"se": "SITE-A-DISK"}, {"se": "SITE-B-DISK"}]} for lfn in lfns])
    await admin.set_replica_statuses([{"lfn": lfn, "se": "SITE-B-DISK", "status": "bad", "expected": "available"}
                                      for lfn in lfns[::2]])
    return lfns[::2]


async def test_bad_replicas_are_paged_by_lfn_and_filtered_by_se(api: RunningApi, grid: Grid, admin: Client) -> None:
    bad = await spoil(admin, 10)
    first = await admin.bad_replicas(limit=3)
    assert [r["lfn"] for r in first["replicas"]] == bad[:3] and first["next_after"] == bad[2]
    rest = await admin.bad_replicas(after=first["next_after"])
    assert [r["lfn"] for r in rest["replicas"]] == bad[3:] and rest["next_after"] is None
    assert all(r["se"] == "SITE-B-DISK" and r["good_copies"] == 1 for r in rest["replicas"])
    assert (await admin.bad_replicas(se="SITE-A-DISK"))["replicas"] == []
    async with api.client(api.token(scopes=("catalogue.read", "catalogue.write"))) as alice:
        with pytest.raises(Forbidden):
            await alice.bad_replicas()


async def test_the_cli_lists_bad_replicas(api: RunningApi, grid: Grid, admin: Client) -> None:
    bad = await spoil(admin, 4)
    done = await run_cli(api.url, api.admin_token, "se", "bad-replicas", "SITE-B-DISK", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["lfn"] for r in json.loads(done.stdout)["replicas"]] == bad


async def test_the_triage_page_removes_selected_bad_replicas(
    api: RunningApi, grid: Grid, admin: Client, portal: PortalFactory,
) -> None:
    bad = await spoil(admin, 6)
    async with portal(api.admin_token) as root:
        page = await root.get("/ui/triage", params={"limit": "2"})
        assert page.status == 200 and page.text.count('name="replica"') == 2 and 'id="next"' in page.text
        done = await root.post("/ui/triage/remove", [("replica", f"{bad[0]}|SITE-B-DISK")])
        assert done.status == 200 and f"{bad[0]} on SITE-B-DISK: removed" in done.text
    assert [r["se"] for r in (await admin.get_file(bad[0]))["replicas"]] == ["SITE-A-DISK"]
    assert [r["lfn"] for r in (await admin.bad_replicas())["replicas"]] == bad[1:]
    async with portal(api.token(scopes=("catalogue.read", "catalogue.write"))) as alice:
        assert (await alice.get("/ui/triage")).status == 403
        assert (await alice.post("/ui/triage/remove", [("replica", f"{bad[1]}|SITE-B-DISK")])).status == 403
    assert len((await admin.bad_replicas())["replicas"]) == 2
