"""The one gate of every portal page: the REST route's own Policy, checked on the session's user."""

from __future__ import annotations

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from cairn.portal.session import principal
from catalogue.authorization import require_installation_view
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput
from kernel.principal import Principal
from kernel.web import DATABASE, ApiRoutes, Policy


def route_policy(table: ApiRoutes, method: str, path: str) -> Policy:
    """The policy of a REST route, looked up in its own table so that a page cannot drift from it."""
    for info in table.routes:
        if info.method == method and info.path == path:
            return info.policy
    raise LookupError(f"no route {method} {path} in table {table.tag!r}")


def caller(request: web.Request, table: ApiRoutes, method: str, path: str) -> tuple[AsyncDatabase[Document], Principal]:
    """The database and the user, after the policy check of the REST route `method path`, whose
    functions the page then calls with this user."""
    user = principal(request)
    route_policy(table, method, path).check(user)
    return request.config_dict[DATABASE], user


def sees_installation(user: Principal) -> bool:
    """Would the API give the user totals over the whole installation (`require_installation_view`)?
    A page leaves out what the user may not see instead of refusing the rest of the page."""
    try:
        require_installation_view(user, "totals over the installation")
    except Forbidden:
        return False
    return True


def page_size(request: web.Request, default: int = 100) -> int:
    """The page size in the query string, bounded so that no page renders a huge listing; one
    that is not ASCII digits is a 400 (`str.isdigit` alone lets through "²", which `int` refuses)."""
    raw = request.query.get("limit", "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"query parameter 'limit' must be a whole number of rows (1 to 1000), got {raw!r}")
    return min(max(int(raw), 1), 1000)
