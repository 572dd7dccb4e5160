"""The web portal under /ui/: server-rendered pages (Jinja2) with htmx and uPlot vendored.

Every page reads through the same functions and access policies as the REST routes, with the
principal decoded from the session cookie (`session.py`); there is no second authorisation path.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from cairn.portal import (
    accounting_pages,
    dashboard,
    job_pages,
    namespace_pages,
    pilot_pages,
    production_pages,
    rule_pages,
    se_pages,
    session_pages,
    transfer_pages,
    triage_pages,
)
from cairn.portal.middleware import forbid_framing, session_middleware

PREFIX = "/ui/"
STATIC = Path(__file__).parent / "static"


def build_portal() -> web.Application:
    """The portal as a sub-application, mounted by the server at /ui/."""
    app = web.Application(middlewares=[session_middleware])
    app.on_response_prepare.append(forbid_framing)
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("cairn.portal", "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined)
    for module in (session_pages, dashboard, namespace_pages, rule_pages, transfer_pages, job_pages,
                   se_pages, accounting_pages, triage_pages, pilot_pages, production_pages):
        app.router.add_routes(module.routes)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app
