"""Keys of a trusted issuer published at a JWKS URL: a key the issuer rotates in is fetched when a
token names it, and whatever tokens arrive (forged ones too), the JWKS URL is asked at most once
per kernel.tokens.JWKS_REFETCH_S, also while it fails."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel import tokens
from kernel.settings import Settings, TrustedIssuer
from kernel.tokens import BuiltinIssuer
from kernel.web import API_PREFIX
from tests.fixtures.api import RunningApi
from tests.fixtures.http_servers import StartServer

ISSUER = "https://iam.example.org/"


@dataclass
class Jwks:
    """The issuer's JWKS endpoint: the keys it publishes, whether it is down, and how often it was asked."""

    signers: list[BuiltinIssuer] = field(default_factory=list)
    down: bool = False
    hits: int = 0

    async def answer(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.down:
            return web.Response(status=503)
        keys = [key for signer in self.signers for key in signer.jwks()["keys"]]
        return web.Response(text=json.dumps({"keys": keys}), content_type="application/json")

    def signer(self, audience: str) -> BuiltinIssuer:
        return BuiltinIssuer(ISSUER, audience, Ed25519PrivateKey.generate(), 600)


@pytest.fixture
def jwks() -> Jwks:
    return Jwks()


@pytest.fixture
async def settings(settings: Settings, http_server: StartServer, jwks: Jwks) -> Settings:
    """The test settings, trusting an issuer whose keys are at the JWKS endpoint above."""
    url = await http_server(jwks.answer)
    iam = TrustedIssuer(issuer=ISSUER, jwks_url=f"{url}/jwks", vo="cta")
    return settings.model_copy(update={"trusted_issuers": [iam]})


async def whoami(api: RunningApi, token: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(
            f"{api.url}{API_PREFIX}/whoami", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status != 503 or int(resp.headers["Retry-After"]) > 0
        return resp.status


async def test_a_rotated_in_key_is_fetched_when_a_token_names_it(
    api: RunningApi, jwks: Jwks, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "JWKS_REFETCH_S", 0.2, raising=False)
    old, new = jwks.signer(api.settings.token_audience), jwks.signer(api.settings.token_audience)
    jwks.signers = [old]
    assert await whoami(api, old.issue(sub="ann", vo="cta")) == 200
    jwks.signers = [old, new]  # the issuer rotates: its new key signs from now on
    await asyncio.sleep(0.3)
    assert await whoami(api, new.issue(sub="ann", vo="cta")) == 200
    assert jwks.hits == 2


async def test_forged_tokens_never_flood_the_jwks_url(
    api: RunningApi, jwks: Jwks, monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = jwks.signer(api.settings.token_audience)
    jwks.signers = [signer]
    assert await whoami(api, signer.issue(sub="ann", vo="cta")) == 200
    forger = Ed25519PrivateKey.generate()
    forged = [jwt.encode({"iss": ISSUER, "sub": "x", "aud": api.settings.token_audience, "exp": 2**40},
                         forger, algorithm="EdDSA", headers={"kid": f"k{n}"}) for n in range(20)]
    assert await asyncio.gather(*(whoami(api, t) for t in forged)) == [401] * 20
    assert jwks.hits == 1  # unknown key ids right after a fetch ask nothing
    monkeypatch.setattr(tokens, "JWKS_CACHE_S", 0.2)
    await asyncio.sleep(0.3)  # the keys expire, and the endpoint is down when they are asked again
    jwks.down = True  # a dependency down: 503 with Retry-After, not "bad token", and one fetch only
    assert await asyncio.gather(*(whoami(api, t) for t in forged)) == [503] * 20
    assert await whoami(api, signer.issue(sub="ann", vo="cta")) == 503
    assert jwks.hits == 2
