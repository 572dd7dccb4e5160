"""The portal behind a proxy that ends TLS: the requests arrive as plain http, but the server's
public URL is https, so the portal's cookies are still Secure (a browser never sends them in clear)."""

from __future__ import annotations

import aiohttp
import pytest

from kernel.settings import Settings
from tests.fixtures.api import RunningApi
from tests.fixtures.portal import CSRF

SECURE_URL = "https://cairn.example.org"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_url": SECURE_URL})


def cookie(response: aiohttp.ClientResponse, name: str) -> str:
    return next(v for v in response.headers.getall("Set-Cookie") if v.startswith(f"{name}="))


async def test_the_portals_cookies_are_secure_when_the_public_url_is_https(api: RunningApi) -> None:
    # The client here speaks http to the server as the proxy would, and sends the cookies by hand
    # (its jar, like a browser, keeps Secure cookies off plain http).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{api.url}/ui/login") as form:
            login_cookie, text = cookie(form, "cairn_login_csrf"), await form.text()
        found = CSRF.search(text)
        assert found is not None and "Secure" in login_cookie
        fields = {"token": api.token(scopes=("catalogue.read",)), "next": "/ui/", "csrf": found.group(1)}
        async with http.post(f"{api.url}/ui/login", data=fields, allow_redirects=False,
                             headers={"Cookie": login_cookie.split(";")[0]}) as page:
            assert page.status == 303, await page.text()
            session = cookie(page, "cairn_session")
    assert "Secure" in session and "HttpOnly" in session
