"""HTTP building blocks shared by every package's routes: typed app state, the route table
that records each route's access policy and OpenAPI description, the middlewares for errors,
authentication and body limits, and helpers to read and write JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import ClientSession, web
from pydantic import BaseModel, ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from kernel import jsonio
from kernel.api_prefix import API_PREFIX
from kernel.bounds import parse_json
from kernel.db import UNAVAILABLE_ERRORS, Document
from kernel.errors import (
    BodyTooLarge,
    CairnError,
    Forbidden,
    InvalidInput,
    MalformedRequest,
    NotFound,
    RequestTimeout,
    ServiceUnavailable,
    Unauthenticated,
)
from kernel.principal import Principal
from kernel.settings import Settings
from kernel.tokens import BuiltinIssuer, TokenVerifier

log = logging.getLogger("cairn.http")

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", AsyncDatabase[Document])
VERIFIER = web.AppKey("verifier", TokenVerifier)
ISSUER = web.AppKey("issuer", BuiltinIssuer)
HTTP_SESSION = web.AppKey("http_session", ClientSession)
ROUTE_TABLES = web.AppKey("route_tables", list["ApiRoutes"])
PRINCIPAL = web.RequestKey("principal", Principal)
# What a verified caller may reach on this installation (its VO): set by the assembly
# (`catalogue.vos.confine`), applied to every authenticated request.
Confine = Callable[[AsyncDatabase[Document], Principal], Awaitable[Principal]]
CONFINE: web.AppKey[Confine] = web.AppKey("confine")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


# ---------------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Policy:
    """Who may call a route: nobody needs a token (public) or the caller needs every scope listed.

    Path-level permissions (owner/group/mode) are checked inside the handler, where the path
    is known; the policy here is the first gate and is what the OpenAPI document shows.
    """

    scopes: tuple[str, ...] = ()
    public: bool = False
    admin: bool = False

    def check(self, principal: Principal | None) -> None:
        if self.public:
            return
        if principal is None:
            raise Unauthenticated("this route needs a bearer token (Authorization: Bearer ...)")
        if self.admin and not principal.is_global_admin:
            raise Forbidden("this route is for administrators of the installation (scope 'admin'; "
                            "a VO's admin manages only that VO)")
        missing = [s for s in self.scopes if not principal.has_scope(s)]
        if missing:
            raise Forbidden(f"token lacks scope(s): {', '.join(missing)}")

    def describe(self) -> str:
        if self.public:
            return "public"
        if self.admin:
            return "admin"
        return "scopes: " + ", ".join(self.scopes) if self.scopes else "any authenticated caller"


PUBLIC = Policy(public=True)
AUTHENTICATED = Policy()
ADMIN = Policy(admin=True)


def scopes(*names: str) -> Policy:
    return Policy(scopes=names)


# ------------------------------------------------------------------------------ route tables


@dataclass
class RouteInfo:
    method: str
    path: str
    handler: Handler
    policy: Policy
    summary: str
    body: type[BaseModel] | None = None
    query: dict[str, str] = field(default_factory=dict)
    responses: dict[int, str] = field(default_factory=dict)
    streams: tuple[str, ...] = ()
    tag: str = ""
    response: type[BaseModel] | None = None
    status: int = 200


class ApiRoutes:
    """A package's routes. Each route names its policy; `install` mounts them under /api/v1."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[RouteInfo] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        policy: Policy,
        summary: str,
        body: type[BaseModel] | None = None,
        query: dict[str, str] | None = None,
        responses: dict[int, str] | None = None,
        streams: Iterable[str] = (),
        response: type[BaseModel] | None = None,
        status: int = 200,
    ) -> Callable[[Handler], Handler]:
        """Record a route; `response` is the model of its success body (answered with `status`),
        published in the OpenAPI document so that answers can be checked against it."""

        def register(handler: Handler) -> Handler:
            self.routes.append(
                RouteInfo(
                    method.upper(),
                    path,
                    handler,
                    policy,
                    summary,
                    body,
                    dict(query or {}),
                    dict(responses or {}),
                    tuple(streams),
                    self.tag,
                    response,
                    status,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)

    def install(self, app: web.Application) -> None:
        for info in self.routes:
            app.router.add_route(info.method, API_PREFIX + info.path, _guarded(info))


def _guarded(info: RouteInfo) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        info.policy.check(request.get(PRINCIPAL))
        return await info.handler(request)

    handler.__name__ = info.handler.__name__
    return handler


def principal_of(request: web.Request) -> Principal:
    """The caller of a route whose policy required a token."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise Unauthenticated("this route needs a bearer token")
    return principal


# ------------------------------------------------------------------------------- middlewares


def error_body(exc: CairnError) -> web.Response:
    headers = {}
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return web.Response(
        status=exc.status, text=jsonio.dumps(exc.to_json()), content_type="application/json", headers=headers
    )


_HTTP_CODES = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON with a stable code; unexpected ones are logged, never leaked."""
    try:
        return await handler(request)
    except CairnError as exc:
        return error_body(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return error_body(BodyTooLarge(f"request body exceeds the limit of {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        body = {"code": code, "message": f"{exc.reason}: {request.method} {request.path}"}
        return web.Response(status=exc.status, text=jsonio.dumps(body), content_type="application/json")
    except UNAVAILABLE_ERRORS as exc:
        return error_body(ServiceUnavailable(f"database unavailable: {type(exc).__name__}"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = {"code": "internal_error", "message": "internal error; the server log has the details"}
        return web.Response(status=500, text=jsonio.dumps(body), content_type="application/json")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify a bearer token if one is sent; a bad token is refused even on public routes."""
    header = request.headers.get("Authorization")
    if header:
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        request[PRINCIPAL] = await authenticate(request, token.strip())
    return await handler(request)


async def authenticate(request: web.Request, token: str) -> Principal:
    """The caller a token names, confined to what its VO may reach (401 for a bad token)."""
    principal = await request.config_dict[VERIFIER].verify(token)
    confine = request.config_dict.get(CONFINE)
    return await confine(request.config_dict[DATABASE], principal) if confine else principal


# ------------------------------------------------------------------------------ JSON helpers


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=jsonio.dumps(data), content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, refusing oversized, slow (408) or unparseable bodies with 4xx."""
    settings = request.app[SETTINGS]
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"request body of {request.content_length} bytes exceeds the limit of {limit}")
    try:
        raw = await asyncio.wait_for(request.read(), settings.body_read_s)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {settings.body_read_s:g} s") from None
    if not raw:
        raise MalformedRequest("request body is empty; expected JSON")
    return parse_json(raw)


def validation_message(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]} for err in exc.errors()
    ]
    text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:10])
    return text, problems


async def read_model(request: web.Request, model: type[M]) -> M:
    """The request body validated against a pydantic model (400 naming each bad field)."""
    data = await read_json(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        text, problems = validation_message(exc)
        raise InvalidInput(f"invalid request body: {text}", details={"errors": problems}) from exc
    except CairnError:
        raise
    except Exception as exc:  # a validator that failed some other way: still the input's fault
        raise InvalidInput(f"invalid request body: {type(exc).__name__}: {exc}") from exc


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int = 10**9) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name!r} must be an integer, got {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise InvalidInput(f"query parameter {name!r} must be between {minimum} and {maximum}")
    return value


# A stream writes what it holds when it holds NDJSON_CHUNK items or when NDJSON_WAIT seconds
# have passed since its last write, so the first entries leave at once and later ones in large
# writes.
NDJSON_CHUNK = 2000
NDJSON_WAIT = 0.05


async def stream_ndjson(request: web.Request, items: AsyncIterable[Any]) -> web.StreamResponse:
    """Stream items as newline-delimited JSON; memory stays constant however many there are."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    batch: list[bytes] = []
    clock = asyncio.get_running_loop().time
    due = clock() + NDJSON_WAIT
    try:
        async for item in items:
            batch.append(jsonio.dumps_bytes(item))
            if len(batch) >= NDJSON_CHUNK or clock() >= due:
                batch.append(b"")
                await response.write(b"\n".join(batch))
                batch.clear()
                due = clock() + NDJSON_WAIT
    except Exception as exc:
        # Headers are gone already: the last line carries the error so clients can tell
        # a cut-short stream from a complete one (an error answer made now went nowhere, and the
        # client waited for the rest). The database down is a 503's error; anything else, one
        # record the view could not show among them, an internal error's.
        if isinstance(exc, UNAVAILABLE_ERRORS):
            exc = ServiceUnavailable(f"database unavailable: {type(exc).__name__}")
        if not isinstance(exc, CairnError):
            log.exception("%s %s: the stream stopped midway", request.method, request.path)
            exc = CairnError("internal error; the server log has the details")
        batch.append(jsonio.dumps_bytes({"error": exc.to_json()}))
    if batch:
        batch.append(b"")
        await response.write(b"\n".join(batch))
    await response.write_eof()
    return response


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} does not exist")
