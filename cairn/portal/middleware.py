"""The portal's middleware: the session cookie decoded into the principal, strangers sent to the
login page, CSRF checked on every POST, and refusals shown as pages; and no page in a frame."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from cairn.portal.render import error_page
from cairn.portal.session import SESSION_COOKIE, TOKEN, check_csrf
from kernel.errors import CairnError, Unauthenticated
from kernel.web import PRINCIPAL, Handler, authenticate

PUBLIC_PATHS = ("/ui/login", "/ui/static/")
# No other site may frame a portal page: its buttons (kill jobs, flip SE switches, remove
# replicas) must not be clicked through a page laid over it (clickjacking).
NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decode the session cookie into the principal, send strangers to the login page, check
    CSRF on every POST, and show errors as pages instead of JSON."""
    try:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            try:
                request[PRINCIPAL] = await authenticate(request, token)
                request[TOKEN] = token
            except Unauthenticated:
                token = None
        public = request.path.startswith(PUBLIC_PATHS)
        if not token and not public:
            if request.method == "GET" and not request.headers.get("HX-Request"):
                raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='/')}")
            raise Unauthenticated("your session has ended; log in again")
        if request.method == "POST":
            await check_csrf(request)
        return await handler(request)
    except CairnError as exc:
        return await error_page(request, exc)


async def forbid_framing(request: web.Request, response: web.StreamResponse) -> None:
    """Every portal answer (pages, errors, redirects, static files) refuses to be framed."""
    response.headers.update(NO_FRAMING)
