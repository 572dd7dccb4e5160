"""HTTP routes of consistency checks (admins only): queue and read audit runs, clean dark data."""

from __future__ import annotations

import pyarrow as pa
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue.storage_elements import get_storage_element
from catalogue.streaming import stream_rows
from kernel.responses import BulkAnswer, JsonList, JsonObject
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, read_model
from transfers import audit_runs
from transfers.auditor import request_dark_deletion

routes = ApiRoutes("audit")
ENTRY_SCHEMA = pa.schema([
    pa.field("kind", pa.string(), nullable=False), pa.field("lfn", pa.string(), nullable=False),
    pa.field("se", pa.string()), pa.field("size", pa.int64()), pa.field("storage_size", pa.int64()),
    pa.field("adler32", pa.string()), pa.field("storage_adler32", pa.string()),
    pa.field("status", pa.string()), pa.field("marked", pa.bool_()), pa.field("no_copy", pa.bool_()),
    pa.field("clean", pa.string()),
])
ENTRY_FIELDS = [field.name for field in ENTRY_SCHEMA]


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    se: str = Field(..., min_length=1, max_length=64)
    dump: str | None = Field(None, max_length=4096, description="absolute path of a storage dump on the SE")


def _run_view(run: dict[str, object]) -> dict[str, object]:
    return {"id": run["_id"], **{k: v for k, v in run.items() if k not in ("_id", "open_se")}}


@routes.post("/audit/runs", policy=ADMIN, summary="Queue an audit of an SE (its listing, or a dump on it)",
             body=RunBody, responses={404: "no such SE", 409: "a run of this SE is open already"}, status=201,
             response=JsonObject)
async def queue(request: web.Request) -> web.Response:
    body = await read_model(request, RunBody)
    db = request.app[DATABASE]
    await get_storage_element(db, body.se)
    run = await audit_runs.queue_run(db, body.se, requester=principal_of(request).sub, dump=body.dump)
    return json_response(_run_view(run), status=201)


@routes.get("/audit/runs", policy=ADMIN, summary="The latest audit runs, newest first",
            query={"se": "only runs of this SE"}, response=JsonList)
async def list_runs(request: web.Request) -> web.Response:
    runs = await audit_runs.list_runs(request.app[DATABASE], se=request.query.get("se"))
    return json_response([_run_view(run) for run in runs])


@routes.get("/audit/runs/{id}", policy=ADMIN, summary="One audit run with its counters",
            responses={404: "no such run"}, response=JsonObject)
async def get_run(request: web.Request) -> web.Response:
    return json_response(_run_view(await audit_runs.get_run(request.app[DATABASE], request.match_info["id"])))


@routes.get("/audit/runs/{id}/entries", policy=ADMIN, summary="What a run found (NDJSON, Arrow or Parquet)",
            query={"kind": "lost, dark, size_mismatch, checksum_mismatch or mismatch (both)",
                   "format": "json, arrow or parquet"},
            responses={404: "no such run"},
            streams=("application/x-ndjson", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"))
async def entries(request: web.Request) -> web.StreamResponse:
    db, run_id = request.app[DATABASE], request.match_info["id"]
    await audit_runs.get_run(db, run_id)
    rows = audit_runs.entries(db, run_id, request.query.get("kind"))
    return await stream_rows(request, rows, view=lambda e: {k: e.get(k) for k in ENTRY_FIELDS}, schema=ENTRY_SCHEMA,
                             fmt=request.query.get("format"), filename=f"{run_id}-entries")


@routes.post("/audit/runs/{id}/clean-dark", policy=ADMIN, summary="Have the reaper delete a finished run's dark files",
             responses={404: "no such run", 409: "the run has not finished"}, status=201, response=BulkAnswer)
async def clean_dark(request: web.Request) -> web.Response:
    answer = await request_dark_deletion(request.app[DATABASE], request.match_info["id"],
                                         requester=principal_of(request).sub)
    return json_response(answer, status=201)
