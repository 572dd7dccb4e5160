"""HTTP routes of files and replicas: bulk registration, lookup, removal, replica resolution,
adding and removing replicas and changing their status. Bulk calls answer per LFN."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import files, replica_triage, replicas, upload_leases, upload_undos
from catalogue.file_models import FileIn, ReplicaStatus
from catalogue.files import authorized_files
from catalogue.lfn import check_lfn
from catalogue.permissions import PERMISSION_FIELDS, READ, WRITE
from catalogue.refusals import refusal
from catalogue.usage import INTERNAL_FIELDS
from catalogue.writer_tokens import writer_digest
from kernel.bounds import MAX_BULK_ITEMS
from kernel.db import for_output
from kernel.errors import Conflict, InvalidInput, NotFound
from kernel.responses import BulkAnswer
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes

routes = ApiRoutes("files")
READ_SCOPE = scopes("catalogue.read")
WRITE_SCOPE = scopes("catalogue.write")
BULK_RESPONSES = {400: "a bad item (nothing written)", 413: "body over the limit"}
# What /replicas/resolve reads of each file record.
RESOLVED_FIELDS = {"replicas": 1, **dict.fromkeys(PERMISSION_FIELDS, 1)}


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[FileIn] = Field(..., max_length=1_000_000)


class LfnsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(..., max_length=MAX_BULK_ITEMS, description=f"at most {MAX_BULK_ITEMS} LFNs per call")
    active: bool = Field(False, description="only replicas available on a read-enabled SE")


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(..., max_length=MAX_BULK_ITEMS, description=f"at most {MAX_BULK_ITEMS} LFNs per call")


class RemoveFilesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(..., max_length=1_000_000)
    force: bool = Field(False, description="remove files that still have replicas")


class ReplicaItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    se: str = Field(..., min_length=1)
    url: str | None = None
    status: ReplicaStatus = "available"


class ReplicasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: list[ReplicaItem] = Field(..., max_length=1_000_000)


class ReplicaPlace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    se: str = Field(..., min_length=1)


class ReplicaStatusBody(ReplicaPlace):
    status: ReplicaStatus
    expected: ReplicaStatus | None = None


class HeldReplicaStatusBody(ReplicaStatusBody):
    writer: str | None = Field(None, min_length=16, max_length=64,
                               description="an upload's token: only a replica that upload holds changes")


class ReplicaStatusesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: list[HeldReplicaStatusBody] = Field(..., max_length=100_000)


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    writer: str = Field(..., min_length=16, max_length=64, description="the upload's own random token")
    replicas: list[ReplicaPlace] = Field(..., max_length=MAX_BULK_ITEMS)
    renew: bool = Field(False, description="only renew: a replica another writer took over is refused")


class UndoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    writer: str = Field(..., min_length=16, max_length=64, description="the failed upload's own token")
    se: str = Field(..., min_length=1)
    lfns: list[str] = Field(..., max_length=MAX_BULK_ITEMS)


def _checked(lfns: list[str]) -> list[str]:
    for lfn in lfns:
        check_lfn(lfn)
    return lfns


@routes.post("/files/register", policy=WRITE_SCOPE, summary="Register files with their first replicas (bulk)",
             body=RegisterBody, responses=BULK_RESPONSES, response=BulkAnswer)
async def register(request: web.Request) -> web.Response:
    body = await read_model(request, RegisterBody)
    return json_response(await files.register_files(request.app[DATABASE], principal_of(request), body.files))


@routes.get("/files", policy=READ_SCOPE, summary="One file with its replicas", query={"lfn": "the LFN"},
            responses={404: "no such file"})
async def get_file(request: web.Request) -> web.Response:
    lfn = check_lfn(request.query.get("lfn", ""))
    allowed, failed = await authorized_files(request.app[DATABASE], principal_of(request), [lfn], READ)
    if lfn in failed:
        raise refusal(lfn, failed[lfn])
    return json_response(_file_view(lfn, allowed[lfn]))


@routes.post("/files/remove", policy=WRITE_SCOPE, summary="Remove file records (bulk)", body=RemoveFilesBody,
             responses=BULK_RESPONSES, response=BulkAnswer)
async def remove(request: web.Request) -> web.Response:
    body = await read_model(request, RemoveFilesBody)
    result = await files.remove_files(request.app[DATABASE], principal_of(request), _checked(body.lfns),
                                      force=body.force)
    return json_response(result)


@routes.post("/replicas/resolve", policy=READ_SCOPE, summary="Replicas of many LFNs (bulk; active: usable only)",
             body=LfnsBody, responses=BULK_RESPONSES, response=BulkAnswer)
async def resolve(request: web.Request) -> web.Response:
    body = await read_model(request, LfnsBody)
    db = for_output(request.app[DATABASE])  # read only to be answered
    # authorized_files checks each LFN; the records are read without what the answer does not use
    allowed, failed = await authorized_files(db, principal_of(request), body.lfns, READ, RESOLVED_FIELDS)
    if body.active:
        allowed, inactive = await replicas.only_active(db, allowed)
        failed |= inactive
    found = {lfn: doc.get("replicas", []) for lfn, doc in allowed.items()}
    return json_response({"successful": found, "failed": failed})


async def _writable(request: web.Request, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    lfns = _checked(list(dict.fromkeys(i["lfn"] for i in items)))
    _, failed = await authorized_files(request.app[DATABASE], principal_of(request), lfns, WRITE)
    return [i for i in items if i["lfn"] not in failed], failed


@routes.post("/replicas/add", policy=WRITE_SCOPE, summary="Add replicas (bulk; w on each file)", body=ReplicasBody,
             responses=BULK_RESPONSES, response=BulkAnswer)
async def add(request: web.Request) -> web.Response:
    body = await read_model(request, ReplicasBody)
    items = [i.model_dump(exclude_none=True) for i in body.replicas]  # w on each file: checked there
    return json_response(await replicas.add_replicas(request.app[DATABASE], items, principal_of(request)))


@routes.post("/replicas/remove", policy=WRITE_SCOPE, summary="Remove replicas from the catalogue (bulk)",
             body=ReplicasBody, responses=BULK_RESPONSES, response=BulkAnswer)
async def remove_replicas(request: web.Request) -> web.Response:
    body = await read_model(request, ReplicasBody)
    items, refused = await _writable(request, [{"lfn": i.lfn, "se": i.se} for i in body.replicas])
    result = await replicas.remove_replicas(request.app[DATABASE], items)
    result["failed"].update(refused)
    return json_response(result)


@routes.post("/replicas/status", policy=WRITE_SCOPE, summary="Set a replica's status (guarded by expected)",
             body=ReplicaStatusBody, responses={404: "no such replica", 409: "status is not the expected one"})
async def set_status(request: web.Request) -> web.Response:
    body = await read_model(request, ReplicaStatusBody)
    db = request.app[DATABASE]
    allowed, failed = await authorized_files(db, principal_of(request), [check_lfn(body.lfn)], WRITE)
    if body.lfn in failed:
        raise refusal(body.lfn, failed[body.lfn])
    judged = {f: allowed[body.lfn].get(f) for f in PERMISSION_FIELDS}  # a chmod or chown since refuses it
    changed = await replicas.set_replica_status(db, body.lfn, body.se, body.status, expected=body.expected,
                                                judged=judged)
    if not changed:
        _, now_failed = await authorized_files(db, principal_of(request), [body.lfn], WRITE)
        if body.lfn in now_failed:
            raise refusal(body.lfn, now_failed[body.lfn])
        current = {r["se"]: r.get("status") for r in allowed[body.lfn].get("replicas", [])}
        if body.se not in current:
            raise NotFound(f"{body.lfn} has no replica on {body.se}")
        raise Conflict(f"replica of {body.lfn} on {body.se} is not {body.expected!r}")
    return json_response({"lfn": body.lfn, "se": body.se, "status": body.status})


@routes.post("/replicas/statuses", policy=WRITE_SCOPE, summary="Set the status of many replicas (bulk; one per LFN, "
             "each guarded by its expected status and, if given, its upload's writer)", body=ReplicaStatusesBody,
             responses=BULK_RESPONSES,
             response=BulkAnswer)
async def set_statuses(request: web.Request) -> web.Response:
    body = await read_model(request, ReplicaStatusesBody)
    items, allowed, failed = await _writable_replicas(request, body.replicas)
    for item in items:  # kept as `catalogue.upload_leases` keeps it
        item["writer"] = None if item.get("writer") is None else writer_digest(item["writer"])
    result = await replicas.set_replica_statuses(request.app[DATABASE], items, allowed, as_judged=True)
    result["failed"].update(failed)
    return json_response(result)


async def _writable_replicas(request: web.Request, wanted: Sequence[ReplicaPlace]
                             ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """Of a bulk call's replicas (one per LFN), those on files the caller may write: the items,
    those files' records, and why each other LFN failed (a hidden file as a missing one)."""
    lfns = _checked([item.lfn for item in wanted])
    if len(set(lfns)) != len(lfns):
        raise InvalidInput("one replica per LFN in a call: give the others in another call")
    allowed, failed = await authorized_files(request.app[DATABASE], principal_of(request), lfns, WRITE)
    return [item.model_dump() for item in wanted if item.lfn in allowed], allowed, failed


@routes.post("/files/lookup", policy=READ_SCOPE, summary="Many files with their replicas (bulk)", body=LookupBody,
             responses=BULK_RESPONSES, response=BulkAnswer)
async def lookup(request: web.Request) -> web.Response:
    body = await read_model(request, LookupBody)
    allowed, failed = await authorized_files(request.app[DATABASE], principal_of(request), _checked(body.lfns), READ)
    return json_response({"successful": {lfn: _file_view(lfn, doc) for lfn, doc in allowed.items()}, "failed": failed})


def _file_view(lfn: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"lfn": lfn, **{k: v for k, v in doc.items() if k not in INTERNAL_FIELDS}}


@routes.get("/replicas/bad", policy=ADMIN, summary="Bad replicas for triage, one page of files by LFN",
            query={"se": "only this SE", "after": "last LFN of the previous page", "limit": "1..10000 (1000)"},
            responses={400: "a bad LFN in after, or limit out of range"})
async def bad(request: web.Request) -> web.Response:
    after = request.query.get("after")
    return json_response(await replica_triage.bad_replicas(
        request.app[DATABASE], se=request.query.get("se"), after=check_lfn(after) if after else None,
        limit=query_int(request, "limit", 1000, minimum=1, maximum=10_000)))


@routes.post("/replicas/hold", policy=WRITE_SCOPE, summary="Take or renew an upload's lease on `copying` replicas "
             "(bulk; one per LFN): only one upload writes a replica at a time", body=HoldBody,
             responses=BULK_RESPONSES, response=BulkAnswer)
async def hold(request: web.Request) -> web.Response:
    body = await read_model(request, HoldBody)
    items, allowed, failed = await _writable_replicas(request, body.replicas)
    result = await upload_leases.hold_replicas(request.app[DATABASE], writer_digest(body.writer), items, allowed,
                                               renew=body.renew)
    result["failed"].update(failed)
    return json_response(result)


@routes.post("/replicas/undo", policy=WRITE_SCOPE, summary="Undo a failed upload's replicas on an SE (bulk): only "
             "those it still holds go, each with its record when the upload founded it and it is the only "
             "replica", body=UndoBody, responses=BULK_RESPONSES, response=BulkAnswer)
async def undo(request: web.Request) -> web.Response:
    body = await read_model(request, UndoBody)
    db = request.app[DATABASE]
    allowed, failed = await authorized_files(db, principal_of(request), _checked(list(dict.fromkeys(body.lfns))),
                                             WRITE)
    result = await upload_undos.undo_held_replicas(db, principal_of(request), writer_digest(body.writer), body.se,
                                                   allowed)
    result["failed"].update(failed)
    return json_response(result)
