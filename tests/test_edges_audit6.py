"""Sixth audit, edges: bad input to the portal's rule wizard, and the client's saved settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from cairn.embedded_db import free_port
from cairn.sdk import Client
from kernel.errors import CairnError
from tests.fixtures.api import RunningApi
from tests.fixtures.grid import Grid
from tests.fixtures.portal import PortalFactory

RULES = ("catalogue.read", "rules.read", "rules.write")
NOBODY = 65534


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
