"""HTTP routes of metadata: declared fields, get/set/remove on entries, and queries (find),
streamed as NDJSON, Arrow or Parquet."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import metadata, metadata_fields, vos
from catalogue.authorization import FIELD_ADMINS, require_admin, require_field_admin
from catalogue.find import explain_query, file_view, open_query
from catalogue.lfn import ROOT, check_lfn
from catalogue.metadata_fields import FieldDeclaration, query_fields
from catalogue.streaming import stream_rows
from catalogue.tabular import file_row, file_schema
from kernel.errors import InvalidInput
from kernel.responses import JsonList
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, read_model, scopes

routes = ApiRoutes("metadata")
READ = scopes("catalogue.read")
WRITE = scopes("catalogue.write")


class SetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    values: dict[str, Any] = Field(..., min_length=1, max_length=metadata.MAX_KEYS_PER_CALL)


class RemoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    keys: list[str] = Field(..., min_length=1, max_length=metadata.MAX_KEYS_PER_CALL)


class FindBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., max_length=10_000)
    path: str = Field(ROOT, description="only files below this directory")
    after: str | None = Field(None, description="only LFNs after this one (paging)")
    limit: int | None = Field(None, ge=1, le=10_000_000)
    format: str | None = Field(None, description="json (NDJSON, default), arrow or parquet")


@routes.get("/metadata/fields", policy=READ, response=JsonList,
            summary="Declared (indexed) metadata fields, their types and VOs (the installation's and your VO's)")
async def fields(request: web.Request) -> web.Response:
    principal = principal_of(request)
    vo = principal.vo if principal.confined else None
    return json_response(await metadata_fields.list_fields(request.app[DATABASE], vo))


@routes.put("/metadata/fields", policy=WRITE, body=FieldDeclaration,
            summary="Declare an indexed metadata field with its type: global admins (any VO, or all), a VO's "
                    "admins (for their VO's namespace)",
            responses={400: "bad key or type, or a type change", 403: "not an admin, or the installation's field",
                       404: "no such VO", 409: "the key is taken (another VO's, or differing only in case)"})
async def declare(request: web.Request) -> web.Response:
    principal = principal_of(request)
    require_admin(principal, FIELD_ADMINS)
    body = await read_model(request, FieldDeclaration)
    db = request.app[DATABASE]
    require_field_admin(principal, body.key, await metadata_fields.declaration_of(db, body.key), declaring=True)
    if principal.confined:
        body.vo = principal.vo  # a VO's admin declares for its own VO only
    elif body.vo is not None:
        await vos.get_vo(db, body.vo)
    return json_response(await metadata_fields.declare_field(db, body))


@routes.delete("/metadata/fields", policy=WRITE, summary="Undeclare a field (values stay, as free-form)",
               query={"key": "the field"}, responses={403: "not an admin, or the installation's field",
                                                      404: "not declared (or another VO's)"})
async def undeclare(request: web.Request) -> web.Response:
    key = request.query.get("key", "")
    db = request.app[DATABASE]
    require_admin(principal_of(request), FIELD_ADMINS)
    require_field_admin(principal_of(request), key, await metadata_fields.declaration_of(db, key), declaring=False)
    await metadata_fields.undeclare_field(db, key)
    return json_response({"key": key, "declared": False})


@routes.get("/metadata", policy=READ, summary="Own, effective (inherited) metadata and origins of an entry",
            query={"path": "file or directory"}, responses={404: "no such entry"})
async def get(request: web.Request) -> web.Response:
    path = check_lfn(request.query.get("path", ""))
    return json_response(await metadata.get_metadata(request.app[DATABASE], principal_of(request), path))


@routes.post("/metadata/set", policy=WRITE, summary="Set metadata on a file or directory (w on it)",
             body=SetBody, responses={400: "a value breaks its declared type (nothing written)",
                                      409: "the entry changed meanwhile, again and again (nothing written)",
                                      413: "the entry would hold over 1000 keys or 1 MiB of text (nothing written)"})
async def set_values(request: web.Request) -> web.Response:
    body = await read_model(request, SetBody)
    db = request.app[DATABASE]
    return json_response(await metadata.set_metadata(db, principal_of(request), check_lfn(body.path), body.values))


@routes.post("/metadata/remove", policy=WRITE, summary="Remove own metadata keys from an entry", body=RemoveBody)
async def remove_values(request: web.Request) -> web.Response:
    body = await read_model(request, RemoveBody)
    db = request.app[DATABASE]
    return json_response(await metadata.remove_metadata(db, principal_of(request), check_lfn(body.path), body.keys))


@routes.post("/find", policy=READ, summary="Files matching a metadata query, streamed (NDJSON, Arrow or Parquet)",
             body=FindBody, streams=("application/x-ndjson", "application/vnd.apache.arrow.stream",
                                     "application/vnd.apache.parquet"),
             responses={400: "query syntax or type error, with position"})
async def find(request: web.Request) -> web.StreamResponse:
    body = await read_model(request, FindBody)
    db = request.app[DATABASE]
    declared = await query_fields(db, principal_of(request))
    results = await open_query(db, principal_of(request), body.query, scope=check_lfn(body.path),
                               after=body.after, limit=body.limit)
    return await stream_rows(request, results, fmt=body.format, filename="find", schema=file_schema(declared),
                             view=lambda doc: file_row(file_view(doc), declared) if body.format not in (
                                 None, "json", "ndjson") else file_view(doc))


@routes.post("/find/explain", policy=ADMIN, summary="The database's plan and statistics for a query",
             body=FindBody)
async def explain(request: web.Request) -> web.Response:
    body = await read_model(request, FindBody)
    if body.format:
        raise InvalidInput("explain answers JSON only")
    return json_response(await explain_query(request.app[DATABASE], body.query, check_lfn(body.path)))
