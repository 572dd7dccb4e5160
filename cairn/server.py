"""The API server: assembles every package's routes behind the shared middlewares."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from cairn.components import index_specs, open_work, plain_routes, route_tables
from cairn.portal import PREFIX as PORTAL_PREFIX
from cairn.portal import build_portal
from catalogue.identities import recogniser
from catalogue.tabular import load_converters
from catalogue.vo_routes import OPEN_WORK
from kernel import event_loop
from kernel.collector import settle_collector
from kernel.db import close_client, ensure_indexes, get_database
from kernel.revocation_view import RevocationView
from kernel.settings import Settings
from kernel.tokens import BuiltinIssuer, TokenVerifier
from kernel.web import (
    CONFINE,
    DATABASE,
    HTTP_SESSION,
    ISSUER,
    ROUTE_TABLES,
    SETTINGS,
    VERIFIER,
    auth_middleware,
    error_middleware,
)

log = logging.getLogger("cairn.server")


def build_app(settings: Settings) -> web.Application:
    """The aiohttp application; resources open and close with its cleanup context."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS] = settings
    app[DATABASE] = get_database(settings)
    issuer = BuiltinIssuer.from_settings(settings)
    app[ISSUER] = issuer
    app[CONFINE] = recogniser(settings.token_issuer)
    app[OPEN_WORK] = open_work()
    app[ROUTE_TABLES] = route_tables()
    for table in app[ROUTE_TABLES]:
        table.install(app)
    for method, path, handler in plain_routes():
        app.router.add_route(method, path, handler)
    app.add_subapp(PORTAL_PREFIX, build_portal())
    app.cleanup_ctx.append(_resources)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    app[HTTP_SESSION] = session

    async def fetch_jwks(url: str) -> dict[str, object]:
        async with session.get(url) as resp:
            resp.raise_for_status()
            data: dict[str, object] = await resp.json()
            return data

    revocations = RevocationView(app[DATABASE])
    app[VERIFIER] = TokenVerifier(
        audience=settings.token_audience,
        builtin=app[ISSUER],
        trusted=settings.trusted_issuers,
        fetch_jwks=fetch_jwks,
        revocations=revocations,
    )
    try:
        await ensure_indexes(app[DATABASE], index_specs())
    except Exception as exc:  # the server still starts and answers 503 until the database is back
        log.warning("could not create indexes at start (%s); they will be created on next start", exc)
    yield
    await revocations.close()
    await session.close()
    await close_client()


def run_server(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_app(settings)
    load_converters()
    settle_collector()
    web.run_app(app, loop=event_loop.chosen_loop(), host=settings.api_host, port=settings.api_port, print=None,
                access_log=None, shutdown_timeout=10, keepalive_timeout=settings.keepalive_s)
