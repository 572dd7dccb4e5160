"""Login with a pasted token, and logout."""

from __future__ import annotations

from aiohttp import web

from cairn.portal.render import page
from cairn.portal.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE, TOKEN, new_login_csrf, principal, set_cookie
from kernel.errors import Unauthenticated
from kernel.token_revocation import Revoking, revoke, token_revocation
from kernel.web import authenticate

routes = web.RouteTableDef()


def _next(value: object) -> str:
    """Where to go after login: a portal path only, never another site."""
    target = value if isinstance(value, str) else ""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    csrf = new_login_csrf()
    response = page(request, "login.html", {"login_csrf": csrf, "next": _next(request.query.get("next")),
                                            "problem": None})
    set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    try:
        if not token:
            raise Unauthenticated("paste a token")
        await authenticate(request, token)
    except Unauthenticated as exc:
        csrf = new_login_csrf()
        response = page(request, "login.html", {"login_csrf": csrf, "next": _next(form.get("next")),
                                                "problem": exc.message}, status=401)
        set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf)
        return response
    response = web.HTTPSeeOther(_next(form.get("next")))
    set_cookie(request, response, SESSION_COOKIE, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/ui/")
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """End the session; with `revoke`, revoke its token too, so a copy of the cookie taken earlier
    is no use (nor is the token anywhere else: the CLI's, if it was that one). A token without
    `jti` cannot be revoked alone (only with all its user's): its session just ends."""
    wanted = (await request.post()).get("revoke") == "1"
    if wanted and TOKEN in request and "jti" in principal(request).claims:
        found = Revoking.of(request)
        await revoke(found, principal(request), await token_revocation(found.verifier, request[TOKEN]))
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(SESSION_COOKIE, path="/ui/")
    raise response
