"""HTTP route of the catalogue's change feed: read events after a position (admins), with the
registered consumers' positions (to see who is behind, and what trimming waits for)."""

from __future__ import annotations

from aiohttp import web

from catalogue import change_feed
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, query_int

routes = ApiRoutes("feed")


@routes.get("/feed", policy=ADMIN, summary="Change feed events after a sequence number, and consumer positions",
            query={"after": "sequence number to read after (default 0)", "limit": "at most this many (1-10000)"})
async def feed(request: web.Request) -> web.Response:
    db = request.app[DATABASE]
    after = query_int(request, "after", 0)
    events = await change_feed.read(db, after, query_int(request, "limit", 100, minimum=1, maximum=10_000))
    return json_response({"events": [{"seq": e["_id"], **{k: v for k, v in e.items() if k != "_id"}}
                                     for e in events],
                          "consumers": await change_feed.consumers(db)})
