"""With the database down, a server keeps refusing the tokens it knows revoked, and once its
view of the revocations is older than STALE_S it takes no token at all: 503 with Retry-After,
never a token that may have been revoked meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest

from kernel.revocation_view import STALE_S
from kernel.settings import Settings, load_settings
from tests.fixtures.api import RunningApi
from tests.fixtures.tcp_gate import TcpGate

READER = ("catalogue.read",)


@pytest.fixture
def settings(db_gate: TcpGate, tmp_path: Path) -> Settings:
    """This module's API (and database fixture) reach the database through the gate."""
    return load_settings(mongodb_uri=f"mongodb://127.0.0.1:{db_gate.port}/", database=f"t_{uuid.uuid4().hex[:12]}",
                         var_dir=tmp_path / "var", api_port=0, db_timeout_ms=1000)


async def whoami(url: str, token: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_the_database_down_a_stale_view_answers_503_with_retry_after(api: RunningApi, db_gate: TcpGate) -> None:
    good, revoked = api.token(scopes=READER), api.token(scopes=READER)
    async with api.client() as admin:
        await admin.revoke_token(jti=jwt.decode(revoked, options={"verify_signature": False})["jti"])
    await db_gate.cut()
    try:
        assert (await whoami(api.url, revoked))[0] == 401  # known revoked: still refused
        await asyncio.sleep(STALE_S + 0.5)
        for token in (good, revoked):
            status, headers, body = await whoami(api.url, token)
            assert status == 503 and "revocations" in body, body
            assert int(headers["Retry-After"]) > 0
    finally:
        await db_gate.open()
    for _ in range(100):  # back once a read succeeds (none is tried for RETRY_S after a failure)
        if (await whoami(api.url, good))[0] == 200:
            break
        await asyncio.sleep(0.1)
    assert (await whoami(api.url, good))[0] == 200
    assert (await whoami(api.url, revoked))[0] == 401
