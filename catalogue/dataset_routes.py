"""HTTP routes of datasets and containers: create, show, list, state changes, attach, detach,
refresh, and contents (paged, or streamed as NDJSON, Arrow or Parquet)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase

from catalogue import dataset_contents, dataset_recount, dataset_refresh, datasets
from catalogue.authorization import require_did, visible_files, vo_stamp
from catalogue.datasets import DidIn, did_view
from catalogue.find import check_query
from catalogue.streaming import stream_rows
from catalogue.tabular import DATASET_SCHEMA, check_format
from kernel.db import Document
from kernel.errors import InvalidInput
from kernel.principal import Principal
from kernel.request_ids import call_key, digest
from kernel.responses import JsonList, RebuildBody
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes

routes = ApiRoutes("datasets")
READ = scopes("catalogue.read")
WRITE = scopes("catalogue.write")
STATE_ERRORS = {403: "not the owner, group or an admin", 404: "no such DID", 409: "DID not open, or a cycle"}


class StateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    did: str
    action: Literal["close", "reopen", "freeze"]


class MembersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    did: str
    lfns: list[str] = Field(default_factory=list, max_length=1_000_000, description="files (datasets)")
    children: list[str] = Field(default_factory=list, max_length=100_000, description="DIDs (containers)")


class DidBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    did: str


def _did(request: web.Request) -> str:
    did = request.query.get("did")
    if not did:
        raise InvalidInput("query parameter 'did' is required")
    datasets.check_did(did)
    return require_did(principal_of(request), did)


def _in_vo(request: web.Request, *dids: str) -> None:
    """404 (as for a missing DID) for a DID of another VO named in a body."""
    for did in dids:
        datasets.check_did(did)
        require_did(principal_of(request), did)


@routes.post("/dids", status=201,
             policy=WRITE, summary="Create a dataset or container (a query makes a dynamic dataset)",
             body=DidIn, responses={400: "bad name or query", 403: "scope not yours", 409: "exists already"})
async def create(request: web.Request) -> web.Response:
    body = await read_model(request, DidIn)
    datasets.check_did(body.did)  # a malformed name is a 400 before the scope is judged
    db = request.app[DATABASE]
    principal = principal_of(request)
    if body.query is not None and body.type == "dataset":
        # the checks of its first refresh, before anything is written: a refusal leaves no DID behind
        await check_query(db, principal, body.query, body.path)
    stamp = None
    if body.request_id:  # sent again, the DID its first sending made is answered (`datasets.MADE_BY`)
        asked = body.model_dump(mode="json", exclude={"request_id"})
        stamp = f"{call_key('did-creation', vo_stamp(principal), principal.sub, body.request_id)}:{digest(asked)}"
    doc = await datasets.create_did(db, principal, body, stamp)
    if body.query is not None and doc.get("refreshed") is None:  # its first snapshot (once)
        doc = await dataset_refresh.refresh(db, principal, body.did)
    return json_response(did_view(doc), status=201)


@routes.get("/dids", policy=READ, summary="One dataset or container", query={"did": "scope:name"},
            responses={404: "no such DID"})
async def show(request: web.Request) -> web.Response:
    return json_response(did_view(await datasets.get_did(request.app[DATABASE], _did(request))))


@routes.get("/dids/list", policy=READ, summary="DIDs of a scope, by name",
            query={"scope": "the scope", "after": "last name of the previous page", "limit": "1..10000 (1000)"},
            response=JsonList)
async def list_scope(request: web.Request) -> web.Response:
    scope = request.query.get("scope", "")
    found = await datasets.list_dids(request.app[DATABASE], scope, after=request.query.get("after"),
                                     limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000))
    # another VO's scope lists like an empty one
    return json_response(found if datasets.scope_within_reach(principal_of(request), scope) else [])


@routes.post("/dids/state", policy=WRITE, summary="close, reopen (owner/admin) or freeze (final) a DID",
             body=StateBody, responses=STATE_ERRORS)
async def state(request: web.Request) -> web.Response:
    body = await read_model(request, StateBody)
    _in_vo(request, body.did)
    doc = await datasets.change_state(request.app[DATABASE], principal_of(request), body.did, body.action)
    return json_response(did_view(doc))


@routes.post("/dids/attach", policy=WRITE, summary="Attach files to a dataset or DIDs to a container (open only)",
             body=MembersBody, responses=STATE_ERRORS)
async def attach(request: web.Request) -> web.Response:
    body = await read_model(request, MembersBody)
    _in_vo(request, body.did, *body.children)
    db, principal = request.app[DATABASE], principal_of(request)
    if body.children:
        return json_response(await dataset_contents.attach_children(db, principal, body.did, body.children))
    return json_response(await dataset_contents.attach_files(db, principal, body.did, body.lfns))


@routes.post("/dids/detach", policy=WRITE, summary="Detach files or DIDs (open only)", body=MembersBody,
             responses=STATE_ERRORS)
async def detach(request: web.Request) -> web.Response:
    body = await read_model(request, MembersBody)
    _in_vo(request, body.did, *body.children)
    db, principal = request.app[DATABASE], principal_of(request)
    if body.children:
        return json_response(await dataset_contents.detach_children(db, principal, body.did, body.children))
    return json_response(await dataset_contents.detach_files(db, principal, body.did, body.lfns))


@routes.post("/dids/refresh", policy=WRITE, summary="Re-run a dynamic dataset's query into its snapshot",
             body=DidBody, responses=STATE_ERRORS)
async def refresh(request: web.Request) -> web.Response:
    body = await read_model(request, DidBody)
    _in_vo(request, body.did)
    doc = await dataset_refresh.refresh(request.app[DATABASE], principal_of(request), body.did)
    return json_response(did_view(doc))


@routes.post("/dids/rebuild-counts", policy=ADMIN, body=RebuildBody,
             summary="Recount datasets' files and bytes and containers' children from their rows; report and fix drift")
async def rebuild_counts(request: web.Request) -> web.Response:
    body = await read_model(request, RebuildBody)
    return json_response(await dataset_recount.rebuild(request.app[DATABASE], fix=body.fix))


@routes.get("/dids/contents", policy=READ, summary="One page of a DID's members, sorted",
            query={"did": "scope:name", "after": "last member of the previous page", "limit": "1..10000 (1000)"})
async def contents(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 1000, minimum=1, maximum=10_000)
    return json_response(await _visible_page(request.app[DATABASE], principal_of(request), _did(request),
                                             request.query.get("after"), limit))


SCANNED_PER_PAGE = 10  # stored pages one contents page reads at most once it has a member to show
SCANNED_ROWS = 1000  # stored rows read at a time past hidden ones, whatever the page's limit


async def _visible_page(db: AsyncDatabase[Document], principal: Principal, did: str, after: str | None,
                        limit: int) -> dict[str, object]:
    """One page of the members the caller may see. Files it cannot reach are left out (hidden =
    missing), and `next_after` is always a member shown: naming the last stored row read would
    name a hidden file. So stored rows are read (`limit` of them, then at least SCANNED_ROWS at a
    time) until `limit` members are shown or the end, or, once one is shown, at most
    SCANNED_PER_PAGE reads (a page may then come back shorter); a run of hidden rows before the
    first shown member is read through, a thousand rows a query."""
    shown: list[Document] = []
    cursor, scanned = after, 0
    while True:
        size = limit if scanned == 0 else max(limit, SCANNED_ROWS)
        page = await dataset_contents.list_page(db, did, after=cursor, limit=size)
        shown += await _reachable(db, principal, page["members"])
        cursor, scanned = page["next_after"], scanned + 1
        if len(shown) >= limit or cursor is None or (shown and scanned >= SCANNED_PER_PAGE):
            break
    more = len(shown) > limit or cursor is not None
    shown = shown[:limit]
    key = "lfn" if shown and "lfn" in shown[0] else "did"
    return {"members": shown, "next_after": shown[-1][key] if more and shown else None}


@routes.get("/dids/contents/stream", policy=READ, summary="Every member of a DID (NDJSON, Arrow or Parquet)",
            query={"did": "scope:name", "after": "start after this member", "format": "json, arrow or parquet"},
            streams=("application/x-ndjson", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"))
async def contents_stream(request: web.Request) -> web.StreamResponse:
    did = _did(request)
    fmt = request.query.get("format")
    if check_format(fmt) is not None and (await datasets.get_did(request.app[DATABASE], did))["type"] != "dataset":
        raise InvalidInput("Arrow and Parquet are for dataset contents (files); list containers as JSON")
    rows = await dataset_contents.open_contents(request.app[DATABASE], did, after=request.query.get("after"))
    rows = _reachable_rows(request.app[DATABASE], principal_of(request), rows)
    return await stream_rows(request, rows, view=dict, schema=DATASET_SCHEMA, fmt=fmt, filename=did.replace(":", "_"))


async def _reachable(db: AsyncDatabase[Document], principal: Principal, members: list[Document]) -> list[Document]:
    """The members the caller may see: a file behind a directory it cannot search is left out,
    as if it were not attached (datasets are shared by name, their files keep their own modes)."""
    lfns = [m["lfn"] for m in members if "lfn" in m]
    if principal.is_global_admin or not lfns:
        return members
    seen = await visible_files(db, principal, lfns)
    return [m for m in members if "lfn" not in m or m["lfn"] in seen]


async def _reachable_rows(db: AsyncDatabase[Document], principal: Principal,
                          rows: AsyncIterator[Document]) -> AsyncIterator[Document]:
    """`_reachable` over a stream, checked a thousand rows at a time."""
    batch: list[Document] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= 1000:
            for shown in await _reachable(db, principal, batch):
                yield shown
            batch = []
    for shown in await _reachable(db, principal, batch):
        yield shown
