"""Bad input and bad tokens get a 4xx JSON error with a stable code, and nothing is written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymongo.asynchronous.database import AsyncDatabase

from kernel.db import Document
from kernel.settings import Settings
from tests.fixtures.api import RunningApi

LIMIT = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A small body limit, so the over-the-limit case stays cheap."""
    return settings.model_copy(update={"max_body_bytes": LIMIT})


async def call(api: RunningApi, method: str, path: str, *, token: str | None = None, body: Any = None,
               raw: bytes | None = None, params: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token if token is not None else api.admin_token}",
               "Content-Type": "application/json"}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with aiohttp.ClientSession() as http, http.request(
        method, f"{api.url}/api/v1{path}", data=data, headers=headers, params=params
    ) as resp:
        return resp.status, await resp.json()


async def nothing_at(api: RunningApi, path: str) -> bool:
    status, body = await call(api, "GET", "/namespace/stat", params={"path": path})
    return status == 404 and body["code"] == "not_found"


@pytest.mark.parametrize(("path", "rule"), [
    ("relative/dir", "absolute"), ("/cta/../etc", "dot_segment"), ("/cta/./x", "dot_segment"),
    ("/cta//x", "empty_segment"), ("/cta/x/", "trailing_slash"), ("/cta/a b", "characters"),
    ("/" + "x" * 300, "segment_length"),
])
async def test_invalid_paths_are_refused_naming_the_rule(
    api: RunningApi, catalogue_db: AsyncDatabase[Document], path: str, rule: str
) -> None:
    status, body = await call(api, "POST", "/namespace/mkdir", body={"path": path, "parents": True})
    assert (status, body["code"], body["details"]["rule"]) == (400, "invalid_input", rule)
    status, body = await call(api, "GET", "/namespace/stat", params={"path": path})
    assert status == 400 and body["details"]["rule"] == rule


async def test_one_bad_file_rejects_the_whole_batch(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    good = {"lfn": "/cta/ok", "size": 1, "adler32": "00000001"}
    for bad, word in [({"lfn": "/cta/../x", "size": 1, "adler32": "00000001"}, "'..'"),
                      ({"lfn": "/cta/x", "size": "ten", "adler32": "00000001"}, "size"),
                      ({"lfn": "/cta/x", "size": 1}, "adler32"),
                      ({"lfn": "/cta/x", "size": 1, "adler32": "xyz"}, "adler32"),
                      ({"lfn": "/cta/x", "size": -1, "adler32": "00000001"}, "size"),
                      ({"lfn": 7, "size": 1, "adler32": "00000001"}, "lfn"),
                      ({**good, "lfn": "/cta/y", "colour": "red"}, "colour"),
                      ({**good, "lfn": "/cta/y", "replicas": [{"se": "NOWHERE"}]}, "NOWHERE")]:
        status, body = await call(api, "POST", "/files/register", body={"files": [good, bad]})
        assert status == 400 and body["code"] == "invalid_input" and word in body["message"], body
    assert await nothing_at(api, "/cta/ok") and await nothing_at(api, "/cta")


async def test_malformed_json_and_wrong_shapes(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    status, body = await call(api, "POST", "/files/register", raw=b'{"files": [')
    assert (status, body["code"]) == (400, "malformed_request")
    status, body = await call(api, "POST", "/files/register", body=[1, 2])
    assert (status, body["code"]) == (400, "invalid_input")
    status, body = await call(api, "POST", "/replicas/resolve", body={"lfns": "/cta/f"})
    assert (status, body["code"]) == (400, "invalid_input")
    status, body = await call(api, "GET", "/namespace/ls", params={"path": "/", "limit": "lots"})
    assert (status, body["code"]) == (400, "invalid_input")
    status, body = await call(api, "GET", "/namespace/ls", params={})
    assert (status, body["code"]) == (400, "invalid_input")


async def test_a_body_over_the_limit_is_413(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    files = [{"lfn": f"/cta/big/f{i}", "size": 1, "adler32": "00000001"} for i in range(2000)]
    status, body = await call(api, "POST", "/files/register", body={"files": files})
    assert (status, body["code"]) == (413, "body_too_large")
    assert await nothing_at(api, "/cta/big")


async def test_unknown_se_in_a_path_is_404(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    status, body = await call(api, "GET", "/ses/NOWHERE")
    assert (status, body["code"]) == (404, "not_found")


# ------------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(api: RunningApi, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": api.settings.token_issuer, "aud": api.settings.token_audience, "sub": "mallory", "vo": "cta",
              "groups": ["cta"], "scope": "admin catalogue.write", "iat": now, "nbf": now, "exp": now + 600}
    claims.update(changes)
    return claims


def _signed(api: RunningApi, claims: dict[str, Any], key: Ed25519PrivateKey | None = None) -> str:
    return jwt.encode(claims, key or api.issuer.private_key, algorithm="EdDSA", headers={"kid": api.issuer.kid})


def _bad_tokens(api: RunningApi) -> dict[str, str]:
    now = int(time.time())
    claims = _claims(api)
    unsigned = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": api.issuer.kid}).encode())
    hs_body = hs_header + "." + _b64(json.dumps(claims).encode())
    hs_sig = hmac.new(api.issuer.public_pem, hs_body.encode(), hashlib.sha256).digest()
    return {
        "expired": _signed(api, _claims(api, exp=now - 3600, iat=now - 7200, nbf=now - 7200)),
        "wrong audience": _signed(api, _claims(api, aud="someone-else")),
        "wrong issuer": _signed(api, _claims(api, iss="https://evil.example"), Ed25519PrivateKey.generate()),
        "alg none": unsigned + ".",
        "HS256 with the public key": hs_body + "." + _b64(hs_sig),
        "bad signature": _signed(api, claims, Ed25519PrivateKey.generate()),
        "nbf in the future": _signed(api, _claims(api, nbf=now + 3600)),
        "garbage": "not-a-token",
    }


async def test_every_token_fault_is_401_and_writes_nothing(
    api: RunningApi, catalogue_db: AsyncDatabase[Document]
) -> None:
    for fault, token in _bad_tokens(api).items():
        status, body = await call(api, "POST", "/namespace/mkdir", token=token,
                                  body={"path": "/pwned", "parents": True})
        assert (status, body["code"]) == (401, "unauthenticated"), fault
        status, body = await call(api, "GET", "/namespace/stat", token=token, params={"path": "/"})
        assert status == 401, fault
    assert await nothing_at(api, "/pwned")


async def test_no_token_is_401(api: RunningApi, catalogue_db: AsyncDatabase[Document]) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/namespace/stat?path=/") as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "unauthenticated"
