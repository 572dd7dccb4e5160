"""Token revocation: one token by its jti or given whole, every token of a user issued before
now; refused (401) on the API, the portal and for pilots, at once in the server that took the
revocation and within STALE_S in every other; a VO's admin reaches its VO only, and learns
nothing from a jti of another VO."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from cairn.embedded_db import free_port, wait_for_port
from catalogue.sites import Site, put_site
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput, Unauthenticated
from kernel.process import child_preexec, stop_processes
from kernel.revocation_view import STALE_S
from kernel.settings import Settings
from kernel.tokens import CLOCK_SKEW_S
from tests.fixtures.api import RunningApi
from tests.fixtures.cli import cli_json, run_cli
from tests.fixtures.daemons import daemon_env
from tests.fixtures.portal import PortalFactory

READER = ("catalogue.read",)


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def status_of(url: str, token: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def revoke(api: RunningApi, caller: str, **body: str) -> dict[str, object]:
    async with api.client(caller) as client:
        return await client.revoke_token(**body)


async def test_a_token_revoked_by_its_jti_is_refused_and_its_users_other_tokens_are_not(api: RunningApi) -> None:
    leaked, other = api.token(scopes=READER), api.token(scopes=READER)
    assert await status_of(api.url, leaked) == 200
    await revoke(api, other, jti=jti_of(leaked))
    assert await status_of(api.url, leaked) == 401
    assert await status_of(api.url, other) == 200
    async with api.client(leaked) as client:
        with pytest.raises(Unauthenticated, match="revoked"):
            await client.whoami()


async def test_whoever_holds_a_token_may_revoke_it_by_giving_it_whole(api: RunningApi) -> None:
    leaked = api.token("alice", scopes=READER)
    finder = api.token("bob", scopes=READER)
    entry = await revoke(api, finder, token=leaked)
    assert (entry["kind"], entry["jti"], entry["issuer"]) == ("jti", jti_of(leaked), "cairn")
    assert await status_of(api.url, leaked) == 401
    assert await status_of(api.url, finder) == 200


async def test_an_expired_token_can_still_be_given_to_revoke(api: RunningApi) -> None:
    expired = api.token(scopes=READER, lifetime_s=-3600)
    entry = await revoke(api, api.token(scopes=READER), token=expired)
    assert entry["jti"] == jti_of(expired)


async def test_revoking_a_user_refuses_their_older_tokens_and_accepts_one_issued_after(api: RunningApi) -> None:
    older = api.token("alice", scopes=READER)
    claims = jwt.decode(older, options={"verify_signature": False})
    del claims["iat"]
    undated = jwt.encode(claims | {"jti": "undated"}, api.issuer.private_key, algorithm="EdDSA",
                         headers={"kid": api.issuer.kid})
    assert await status_of(api.url, undated) == 200
    entry = await revoke(api, api.admin_token, user="alice")
    assert entry["kind"] == "subject" and entry["user"] == "alice"
    assert await status_of(api.url, older) == 401
    assert await status_of(api.url, undated) == 401
    assert await status_of(api.url, api.token("bob", scopes=READER)) == 200
    # A token its issuer stamps at not_before (the allowed clock skew after the revocation) is
    # taken once this server's clock lets it be that early (`test_token_revocation_bounds`).
    not_before = int(entry["not_before"])  # type: ignore[call-overload]
    await asyncio.sleep(max(0.0, not_before - CLOCK_SKEW_S - time.time()))
    later = jwt.decode(api.token("alice", scopes=READER), options={"verify_signature": False}) | {"iat": not_before}
    assert await status_of(api.url, jwt.encode(later, api.issuer.private_key, algorithm="EdDSA",
                                               headers={"kid": api.issuer.kid})) == 200


async def test_a_user_may_sign_out_everywhere_but_not_revoke_someone_else(api: RunningApi) -> None:
    mine, again = api.token("alice", scopes=READER), api.token("alice", scopes=READER)
    with pytest.raises(Forbidden, match="only your own"):
        await revoke(api, mine, user="bob")
    await revoke(api, mine, user="alice")
    assert await status_of(api.url, mine) == 401
    assert await status_of(api.url, again) == 401


async def test_a_vo_admin_cannot_revoke_another_vos_token_and_cannot_tell_it_from_an_unknown_jti(
    api: RunningApi,
) -> None:
    async with api.client(api.token("root", vo="*", groups=("admin",), scopes=("admin",))) as admin:
        await admin.put_vo({"name": "lhcb", "roots": ["/lhcb"], "admins": ["lhcbadmin"]})
        await admin.put_vo({"name": "cta", "roots": ["/cta"], "admins": ["ctaadmin"]})
    bob = api.token("bob", vo="lhcb", groups=("phys",), scopes=READER)
    eve = api.token("eve", vo="cta", groups=("phys",), scopes=READER)
    ctaadmin = api.token("ctaadmin", vo="cta", groups=("phys",), scopes=READER)
    foreign = await revoke(api, ctaadmin, jti=jti_of(bob))
    unknown = await revoke(api, ctaadmin, jti="0" * 32)
    assert foreign | {"jti": None, "expires": None} == unknown | {"jti": None, "expires": None}
    assert await status_of(api.url, bob) == 200
    await revoke(api, ctaadmin, user="bob")  # a subject of cta only: lhcb's bob keeps his tokens
    assert await status_of(api.url, bob) == 200
    await revoke(api, ctaadmin, jti=jti_of(eve))
    assert await status_of(api.url, eve) == 401
    async with api.client(ctaadmin) as client:
        listed = await client.token_revocations()
    assert {e["vo"] for e in listed} == {"cta"} and len(listed) == 4


@pytest.mark.parametrize("body", [
    {}, {"jti": "a", "user": "b"}, {"jti": ""}, {"jti": "x" * 257}, {"jti": "a\nb"}, {"user": "u" * 257},
    {"token": "not-a-token"}, {"token": "x.y.z", "issuer": "cairn"}, {"jti": "a", "why": "leaked"},
    {"jti": ["a"]}, {"issuer": "cairn"},
])
async def test_bad_input_is_refused_with_400(api: RunningApi, body: dict[str, object]) -> None:
    async with api.client(api.token(scopes=READER)) as client:
        with pytest.raises(InvalidInput):
            await client.request("POST", "/tokens/revocations", json_body=body)


async def test_a_token_without_jti_cannot_be_revoked_alone(api: RunningApi) -> None:
    claims = jwt.decode(api.token(scopes=READER), options={"verify_signature": False})
    del claims["jti"]
    bare = jwt.encode(claims, api.issuer.private_key, algorithm="EdDSA", headers={"kid": api.issuer.kid})
    with pytest.raises(InvalidInput, match="no jti"):
        await revoke(api, api.token(scopes=READER), token=bare)


async def test_a_revoked_token_ends_its_portal_session(api: RunningApi, portal: PortalFactory) -> None:
    token = api.token(scopes=READER)
    async with portal(token) as user:
        assert (await user.get("/ui/", redirects=False)).status == 200
        await revoke(api, api.admin_token, jti=jti_of(token))
        assert (await user.get("/ui/", redirects=False)).status == 303
        assert (await user.login(token)).status == 401


async def test_logging_out_of_the_portal_revokes_the_sessions_token_when_asked(
    api: RunningApi, portal: PortalFactory,
) -> None:
    kept, ended = api.token(scopes=READER), api.token(scopes=READER)
    async with portal(kept) as user:
        await user.get("/ui/")
        assert (await user.post("/ui/logout", {}, redirects=False)).status == 303
    assert await status_of(api.url, kept) == 200  # a plain logout: the token (maybe the CLI's) lives on
    async with portal(ended) as user:
        await user.get("/ui/")
        assert (await user.post("/ui/logout", {"revoke": "1"}, redirects=False)).status == 303
    assert await status_of(api.url, ended) == 401


async def test_a_revoked_pilot_token_takes_no_more_jobs(api: RunningApi, database: AsyncDatabase[Document]) -> None:
    await put_site(database, Site(name="SITE-A"))
    pilot = api.token("pilot", vo="local", groups=(), scopes=("jobs.pilot",),
                      extra={"cairn_site": "SITE-A", "cairn_pilot": "p1"})
    async with api.client(pilot) as client:
        assert await client.match_job(pilot="p1", site="SITE-A") is None
        await revoke(api, api.admin_token, jti=jti_of(pilot))
        with pytest.raises(Unauthenticated, match="revoked"):
            await client.match_job(pilot="p1", site="SITE-A")


async def test_the_cli_revokes_a_token_file_and_lists_revocations(api: RunningApi, tmp_path: Path) -> None:
    leaked = tmp_path / "leaked.jwt"
    leaked.write_text(api.token(scopes=READER) + "\n")
    entry = await cli_json(api.url, api.token(scopes=READER), "token", "revoke", "--token-file", str(leaked))
    assert entry["jti"] == jti_of(leaked.read_text().strip())  # type: ignore[index]
    assert await status_of(api.url, leaked.read_text().strip()) == 401
    listed = await cli_json(api.url, api.admin_token, "token", "revocations")
    assert [e["jti"] for e in listed] == [entry["jti"]]  # type: ignore[index, union-attr]
    both = await run_cli(api.url, api.admin_token, "token", "revoke", "--jti", "a", "--user", "b")
    assert both.returncode == 2 and "exactly one" in both.stderr


@pytest.fixture
def second_server(api: RunningApi, settings: Settings, tmp_path: Path) -> Iterator[str]:
    """Another `cairn server` process on the same database and signing key."""
    port = free_port()
    log = (tmp_path / "server2.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "server", "--port", str(port)],
                            env=daemon_env(settings), stdout=log, stderr=subprocess.STDOUT, preexec_fn=child_preexec)
    try:
        wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_processes([proc], timeout_s=15)
        log.close()


async def test_a_revocation_reaches_another_server_process_within_the_bound(
    api: RunningApi, second_server: str,
) -> None:
    token = api.token(scopes=READER)
    assert await status_of(second_server, token) == 200
    await revoke(api, api.admin_token, jti=jti_of(token))
    revoked_at = time.monotonic()
    assert await status_of(api.url, token) == 401  # at once where it was made
    while await status_of(second_server, token) == 200:
        assert time.monotonic() - revoked_at < STALE_S + 0.5, "the other server still takes the token"
        await asyncio.sleep(0.1)
    assert await status_of(second_server, api.token(scopes=READER)) == 200
