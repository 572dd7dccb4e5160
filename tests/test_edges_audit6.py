"""Sixth audit, edges: bad input to the portal's rule wizard, and the client's saved settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web

from cairn.embedded_db import free_port
from cairn.sdk import Client
from catalogue.vos import registry
from kernel.errors import CairnError
from rules import subscriptions
from tests.fixtures.api import RunningApi
from tests.fixtures.authz import PRIVATE, USER_SCOPES, World
from tests.fixtures.grid import Grid
from tests.fixtures.live_ses import LiveSEs
from tests.fixtures.payloads import Payload
from tests.fixtures.portal import PortalFactory

RULES = ("catalogue.read", "rules.read", "rules.write")
NOBODY = 65534
T = TypeVar("T")


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


async def test_the_client_ignores_a_saved_url_in_a_file_of_another_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Someone who may write to the directory a user runs `cairn` in (a shared project area)
    plants var/client.json naming their own server: the user's token (from $CAIRN_TOKEN) went
    there with the first call, and so did the files of a `cairn upload`."""
    heard: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        heard.append(request.headers.get("Authorization", ""))
        return web.json_response({"sub": "x"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        planted = tmp_path / "var" / "client.json"
        planted.parent.mkdir()
        planted.write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "token": "theirs"}))
        os.chown(planted, NOBODY, NOBODY)
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("CAIRN_API_URL", raising=False)
        monkeypatch.delenv("CAIRN_VAR_DIR", raising=False)
        monkeypatch.setenv("CAIRN_TOKEN", "my-secret-token")
        with pytest.raises(CairnError, match="not yours"):
            async with Client() as client:
                await client.request("GET", "/whoami")
        assert heard == []
        os.chown(planted, os.geteuid(), os.getegid())
        planted.chmod(0o666)  # anyone may rewrite it: no better
        with pytest.raises(CairnError, match="writable"):
            Client()
        planted.chmod(0o600)  # the user's own, as `cairn up` writes it
        async with Client() as client:
            await client.request("GET", "/whoami")
        assert heard == ["Bearer my-secret-token"]
    finally:
        await runner.cleanup()


async def test_a_subscription_acts_no_longer_as_an_administrator_once_its_owner_is_not_one(
    vo_world: World,
) -> None:
    """dave, made an lhcb administrator in the VO's registry, subscribes; the VO then takes the
    role back. His subscription kept the `admin` scope it was made with: it went on giving him
    rules (locks that keep their owner from deleting the replicas) on any new dataset of the
    VO, bob's private files included, as if he were still an administrator."""
    vo_world.tokens["dave"] = vo_world.api.token("dave", vo="lhcb", groups=("other",), scopes=USER_SCOPES)
    status, _ = await vo_world.call("admin", "PATCH", "/vos/lhcb/members", {"add": ["dave"], "admins": True})
    assert status == 200
    status, made = await vo_world.call("dave", "POST", "/subscriptions",
                                       {"name": "grab", "filter": {"scopes": ["lhcb"]},
                                        "rule": {"copies": 1, "expression": "DISK2"}})
    assert status == 201, made
    status, lhcb = await vo_world.call("admin", "GET", "/vos/lhcb")
    # The whole record again, without dave: PATCH .../members {"remove"} removes nothing on the
    # embedded database (reported: FerretDB 1.24 has no `$pull` by condition).
    lhcb = {k: v for k, v in lhcb.items() if k in ("name", "roots", "scopes", "ses", "sites", "members")}
    status, answer = await vo_world.call("admin", "PUT", "/vos/lhcb", {**lhcb, "admins": ["lhcbadmin"]})
    assert status == 200, answer
    status, _ = await vo_world.call("bob", "POST", "/dids", {"did": "lhcb:bob.new", "type": "dataset"})
    assert status in (200, 201)
    status, _ = await vo_world.call("bob", "POST", "/dids/attach", {"did": "lhcb:bob.new", "lfns": [PRIVATE]})
    assert status == 200
    await registry(vo_world.db, fresh=True)
    assert await subscriptions.apply_to_new(vo_world.db, ["lhcb:bob.new"]) == 0
    assert await vo_world.db["rules"].count_documents({"did": "lhcb:bob.new"}) == 0
    stored = await vo_world.db["subscriptions"].find_one({"name": "grab"})
    assert stored is not None and "needs r on each of its files" in str(stored["errors"]), stored


async def largest_file_while(directory: Path, work: Awaitable[T]) -> tuple[T, int]:
    """What `work` answers, and the largest file seen in `directory` while it ran (looked at
    every millisecond, partial files included)."""
    task = asyncio.ensure_future(work)
    largest = 0
    while not task.done():
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                largest = max(largest, entry.stat().st_size)
        await asyncio.sleep(0.001)
    return await task, largest


async def test_a_download_over_xrootd_takes_no_more_than_the_registered_size(
    live_ses: LiveSEs, admin: Client, payload: Callable[[int], Payload], tmp_path: Path,
) -> None:
    """The replica's bytes replaced behind the catalogue's back by a far larger object (by whoever
    may write there): gfal2's copy took every byte of it onto the reader's disk before its size
    and checksum were compared (the streamed reads stop at the registered size)."""
    se = await live_ses.add("root")
    assert (await admin.upload([payload(4096).path], "/cta/f", se.name))[0].status == "uploaded"
    live_ses.stored_file(se.name, "/cta/f").write_bytes(b"x" * (64 << 20))
    out = tmp_path / "out"
    out.mkdir()
    [result], largest = await largest_file_while(out, admin.download(["/cta/f"], out / "f"))
    assert (result.status, result.code) == ("failed", "checksum_mismatch"), result
    assert largest <= 4096, largest
    assert list(out.iterdir()) == []
