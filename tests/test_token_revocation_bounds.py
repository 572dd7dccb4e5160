"""A user revocation refuses the tokens its issuer may have stamped up to the allowed clock skew
later than the revocation (`iat` is the issuer's clock), and the 1,000 revocations one caller may
hold are a bound however many of their calls race."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import aiohttp
import jwt
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.errors import QuotaExceeded, ServiceUnavailable
from kernel.revocations import PENDING, PENDING_AT, PENDING_S, REVOCATIONS, Revocation, Revoker, held_by, now
from kernel.token_revocation import MAX_PER_REVOKER
from kernel.tokens import CLOCK_SKEW_S
from tests.fixtures.api import RunningApi

READER = ("catalogue.read",)


def stamped(api: RunningApi, sub: str, iat: int) -> str:
    """A token of `sub` as its issuer would sign it with its clock at `iat`."""
    claims = jwt.decode(api.token(sub, scopes=READER), options={"verify_signature": False})
    claims.update(iat=iat, nbf=min(iat, int(claims["nbf"])))
    return jwt.encode(claims, api.issuer.private_key, algorithm="EdDSA", headers={"kid": api.issuer.kid})


async def status_of(url: str, token: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status


async def test_a_token_stamped_within_the_clock_skew_after_a_user_revocation_is_refused(api: RunningApi) -> None:
    async with api.client() as admin:
        made_at = int(time.time())
        entry = await admin.revoke_token(user="alice")
    # An issuer whose clock runs a few seconds ahead stamps a token it signed before the revocation.
    ahead = stamped(api, "alice", made_at + 5)
    assert await status_of(api.url, ahead) == 401
    assert await status_of(api.url, stamped(api, "alice", made_at + CLOCK_SKEW_S - 1)) == 401
    not_before = int(entry["not_before"])
    assert made_at + CLOCK_SKEW_S <= not_before <= made_at + CLOCK_SKEW_S + 2
    # A token stamped at not_before is taken once this server's clock lets it be that early.
    await asyncio.sleep(max(0.0, not_before - CLOCK_SKEW_S - time.time()))
    assert await status_of(api.url, stamped(api, "alice", not_before)) == 200


async def _hold(database: AsyncDatabase[Document], by: Revoker, count: int) -> None:
    """`count` live jti revocations made by `by` (as `record` stores them, in one write)."""
    at = now()
    entries = [Revocation("jti", at.replace(year=at.year + 1), jti=f"held-{i}", iss=by["iss"], sub=by["sub"],
                          vo=by["vo"]) for i in range(count)]
    await database[REVOCATIONS].insert_many([
        {"_id": e.id, "kind": e.kind, "jti": e.jti, "iss": e.iss, "sub": e.sub, "vo": e.vo, "expires": e.expires,
         "changed": at, "by": by} for e in entries])


async def _revoke(api: RunningApi, token: str, jti: str) -> bool:
    async with api.client(token) as client:
        try:
            await client.revoke_token(jti=jti)
        except QuotaExceeded:
            return False
    return True


async def test_concurrent_revocations_never_take_a_caller_past_the_bound(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    alice = api.token("alice", scopes=READER)
    by: Revoker = {"iss": api.issuer.issuer, "sub": "alice", "vo": "cta"}
    left, rounds, racing = 4, 6, 24
    await _hold(database, by, MAX_PER_REVOKER - left)
    passed_bound = 0
    for round_no in range(rounds):
        stored = await asyncio.gather(*(_revoke(api, alice, f"r{round_no}-{i}") for i in range(racing)))
        held = await held_by(database, by)
        passed_bound += held > MAX_PER_REVOKER
        assert held == MAX_PER_REVOKER - left + sum(stored) or held > MAX_PER_REVOKER
        # Back to `left` places for the next round.
        await database[REVOCATIONS].delete_many({"jti": {"$regex": f"^r{round_no}-"}})
    assert passed_bound == 0
    assert await database[REVOCATIONS].count_documents({"pending": {"$exists": True}}) == 0


async def test_a_revocation_made_again_stays_its_first_makers_and_is_admitted_at_the_bound(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    alice = api.token("alice", scopes=READER)
    by: Revoker = {"iss": api.issuer.issuer, "sub": "alice", "vo": "cta"}
    await _hold(database, by, MAX_PER_REVOKER - 1)
    assert await _revoke(api, alice, "last")
    assert not await _revoke(api, alice, "one-more")
    assert await _revoke(api, alice, "last")  # in force already: no new entry, nothing counted
    assert await held_by(database, by) == MAX_PER_REVOKER


async def test_a_revocation_left_pending_by_a_call_that_died_is_made_once_its_mark_lapsed(
    api: RunningApi, database: AsyncDatabase[Document],
) -> None:
    alice = api.token("alice", scopes=READER)
    by: Revoker = {"iss": api.issuer.issuer, "sub": "alice", "vo": "cta"}
    at = now()
    entry = Revocation("jti", at.replace(year=at.year + 1), jti="cut", iss=by["iss"], sub="alice", vo="cta")
    left = {"_id": entry.id, "kind": "jti", "jti": "cut", "iss": by["iss"], "sub": "alice", "vo": "cta",
            "expires": entry.expires, "changed": at, "by": by, PENDING: "dead-call", PENDING_AT: at}
    await database[REVOCATIONS].insert_one(left)
    with pytest.raises(ServiceUnavailable):  # its maker may still be counting: retry later
        await _revoke(api, alice, "cut")
    await database[REVOCATIONS].update_one({"_id": entry.id}, {"$set": {
        PENDING_AT: at - dt.timedelta(seconds=PENDING_S + 1)}})
    assert await _revoke(api, alice, "cut")
    stored = await database[REVOCATIONS].find_one({"_id": entry.id})
    assert stored is not None and PENDING not in stored
