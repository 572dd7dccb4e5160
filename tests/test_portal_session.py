"""Portal sessions: every page needs a login; the token lives in an HttpOnly SameSite=Strict
cookie; every POST needs the session's CSRF token; logout ends the session."""

from __future__ import annotations

from tests.fixtures.api import RunningApi
from tests.fixtures.portal import PortalFactory

READER = ("catalogue.read",)


async def test_a_page_without_a_session_sends_the_browser_to_the_login_page(portal: PortalFactory) -> None:
    async with portal(None) as anonymous:
        page = await anonymous.get("/ui/browse?path=/cta&limit=5", redirects=False)
        assert page.status == 303
        assert page.headers["Location"] == "/ui/login?next=/ui/browse?path%3D/cta%26limit%3D5"
        fragment = await anonymous.get("/ui/rules", redirects=False, headers={"HX-Request": "true"})
        assert fragment.status == 401


async def test_the_vendored_libraries_are_served_without_a_session(portal: PortalFactory) -> None:
    async with portal(None) as anonymous:
        for name in ("htmx-2.0.4.min.js", "uPlot-1.6.31.iife.min.js", "uPlot-1.6.31.min.css"):
            page = await anonymous.get(f"/ui/static/vendor/{name}")
            assert page.status == 200 and len(page.text) > 1000


async def test_login_stores_the_token_in_an_httponly_strict_cookie(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(None) as user:
        form = await user.get("/ui/login")
        user.csrf = form.csrf
        page = await user.post("/ui/login", {"token": api.token(scopes=READER), "next": "/ui/"}, redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/ui/"
        cookie = next(v for v in page.headers.getall("Set-Cookie") if v.startswith("cairn_session="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
        assert "Secure" not in cookie  # plain http on loopback; over https the flag is set
        dashboard = await user.get("/ui/")
        assert dashboard.status == 200 and 'id="whoami">alice (cta)' in dashboard.text


async def test_a_bad_token_is_refused_at_login(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(None) as user:
        page = await user.login("not-a-token")
        assert page.status == 401 and "class=\"error\"" in page.text
        assert (await user.get("/ui/", redirects=False)).status == 303


async def test_login_without_its_csrf_token_is_refused(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(None) as user:
        await user.get("/ui/login")
        page = await user.post("/ui/login", {"token": api.token(scopes=READER)}, csrf=False, redirects=False)
        assert page.status == 403 and "CSRF" in page.text
        assert (await user.get("/ui/", redirects=False)).status == 303


async def test_a_post_without_the_sessions_csrf_token_is_refused(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(api.token(scopes=READER)) as user:
        page = await user.post("/ui/logout", {}, csrf=False, redirects=False)
        assert page.status == 403 and "CSRF" in page.text
        user.csrf = "0" * 64
        assert (await user.post("/ui/logout", {}, redirects=False)).status == 403
        assert (await user.get("/ui/")).status == 200  # still logged in


async def test_logout_ends_the_session(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(api.token(scopes=READER)) as user:
        await user.get("/ui/")
        page = await user.post("/ui/logout", {}, redirects=False)
        assert page.status == 303 and page.headers["Location"] == "/ui/login"
        assert (await user.get("/ui/", redirects=False)).status == 303


async def test_login_only_returns_to_a_portal_page(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(None) as user:
        form = await user.get("/ui/login")
        user.csrf = form.csrf
        page = await user.post("/ui/login", {"token": api.token(scopes=READER), "next": "https://evil.example/"},
                               redirects=False)
        assert page.headers["Location"] == "/ui/"
    async with portal(None) as user:
        form = await user.get("/ui/login?next=/ui/browse%3Fpath%3D/cta%26limit%3D5")
        user.csrf = form.csrf
        page = await user.post("/ui/login", {"token": api.token(scopes=READER), "next": "/ui/browse?path=/cta&limit=5"},
                               redirects=False)
        assert page.headers["Location"] == "/ui/browse?path=/cta&limit=5"
        assert 'name="next" value="/ui/browse?path=/cta&amp;limit=5"' in form.text


async def test_no_portal_page_may_be_framed_by_another_site(api: RunningApi, portal: PortalFactory) -> None:
    async with portal(None) as stranger:
        answers = [await stranger.get("/ui/login"), await stranger.get("/ui/", redirects=False)]
    async with portal(api.token(scopes=READER)) as user:
        answers += [await user.get("/ui/browse", params={"path": "/"}), await user.get("/ui/triage")]
    assert [a.status for a in answers] == [200, 303, 200, 403]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
