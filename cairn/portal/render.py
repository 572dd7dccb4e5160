"""Rendering portal pages: every template gets the user, the CSRF token and the current URL."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from cairn.portal.session import TOKEN, csrf_token
from kernel.errors import CairnError
from kernel.web import PRINCIPAL


def page(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """The template rendered for the logged-in user (or the login page's visitor)."""
    token = request.get(TOKEN)
    base = {"user": request.get(PRINCIPAL), "csrf": csrf_token(token) if token else "",
            "path_qs": request.path_qs, "query": request.query}
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


async def error_page(request: web.Request, exc: CairnError) -> web.Response:
    """A refusal shown as a page (or as a fragment for htmx) with the API's status and code."""
    template = "fragments/error.html" if request.headers.get("HX-Request") else "error.html"
    return page(request, template, {"error": exc.to_json()}, status=exc.status)
