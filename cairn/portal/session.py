"""The portal's session: a token pasted at login, kept in an HttpOnly SameSite=Strict cookie.

The cookie holds the bearer token itself, so every API server stays stateless and a session ends
when its token expires; it is verified by the same `TokenVerifier` as an Authorization header on
every request. Every POST carries a CSRF token: for a session it is derived from the session's
token (`csrf_token`), so only a page the server rendered for that session knows it; the login
form, which has no session yet, uses a random double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from kernel.errors import Forbidden, Unauthenticated
from kernel.principal import Principal
from kernel.web import PRINCIPAL, SETTINGS

SESSION_COOKIE = "cairn_session"
LOGIN_CSRF_COOKIE = "cairn_login_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN = web.RequestKey("portal_token", str)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: a digest of its bearer token, never the token itself."""
    return hashlib.sha256(b"cairn-portal-csrf\0" + session_token.encode()).hexdigest()


def principal(request: web.Request) -> Principal:
    """The logged-in user of a portal page (the middleware has refused anyone else)."""
    found = request.get(PRINCIPAL)
    if found is None:
        raise Unauthenticated("log in first")
    return found


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
               max_age: int | None = None) -> None:
    """A cookie only this site's requests carry, unreadable from scripts; Secure over https, and
    whenever the server's public URL (`CAIRN_API_URL`) is https: behind a proxy that ends TLS,
    the request itself arrives as plain http."""
    public = request.config_dict[SETTINGS].api_url or ""
    response.set_cookie(name, value, path="/ui/", httponly=True, samesite="Strict", max_age=max_age,
                        secure=request.secure or public.lower().startswith("https://"))


async def check_csrf(request: web.Request) -> None:
    """Refuse a POST whose CSRF token (form field or header) is not the session's (or, for the
    login form, not the login cookie's)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.post()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if request.path == "/ui/login":
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    else:
        expected = csrf_token(request[TOKEN]) if TOKEN in request else None
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)
