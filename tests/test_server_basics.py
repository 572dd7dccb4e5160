"""The API server answers health and serves its OpenAPI document; errors are JSON with codes."""

from __future__ import annotations

import aiohttp

from tests.fixtures.api import RunningApi, api_on


async def test_health_reports_the_database_answers(api: RunningApi) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"


async def test_openapi_document_lists_every_route_with_its_policy(api: RunningApi) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/health" in doc["paths"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["x-cairn-policy"], f"{method} {path} names no policy"


async def test_unknown_route_is_a_json_404(api: RunningApi) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/v1/no-such-thing") as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "not_found"


async def test_health_is_503_with_retry_after_when_the_database_is_down(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cairn.embedded_db import free_port

    dead = api_on(settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/", db_timeout_ms=300)
    async with dead as (url, _), aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/health") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"].isdigit()
        assert (await resp.json())["database"] == "unreachable"
