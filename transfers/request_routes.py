"""HTTP routes for requests: bulk replication, staging and deletion; listing, progress, cancel.

Submitting needs, per file, what `catalogue.authorization` says: r to transfer or stage, w to
delete a replica; a file the caller cannot see fails as "no such file", like a missing one."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import (
    REQUEST_DELETION,
    REQUEST_STAGE,
    REQUEST_TRANSFER,
    Action,
    authorize_files,
    require_did,
    require_se,
    visible_files,
    vo_query,
    vo_stamp,
)
from catalogue.dataset_contents import file_lfns
from catalogue.lfn import check_lfn
from catalogue.permissions import within_reach
from catalogue.storage_elements import get_storage_element
from kernel.db import Document
from kernel.errors import Forbidden, InvalidInput, NotFound
from kernel.principal import Principal
from kernel.responses import JsonList
from kernel.web import DATABASE, ApiRoutes, json_response, principal_of, query_int, read_model, scopes
from transfers import cancellation, queueing, request_reads
from transfers import requests as rq
from transfers.shared_requests import both, cancel_as, of_requester, of_submission, release_as

routes = ApiRoutes("requests")

MAX_LFNS = 100_000
MAX_PIN_LIFETIME_S = 7 * 86400


class ReplicationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(default_factory=list, max_length=MAX_LFNS)
    dataset: str | None = Field(None, description="a dataset or container (scope:name): replicate every file in it")
    dest_se: str
    source_se: str | None = None
    activity: str = Field("default", pattern=r"^[A-Za-z0-9_. -]{1,64}$")
    priority: int = Field(3, ge=1, le=5)

    @model_validator(mode="after")
    def lfns_or_dataset(self) -> ReplicationRequest:
        if bool(self.lfns) == (self.dataset is not None):
            raise ValueError("name either 'lfns' (at least one) or a 'dataset', not both")
        return self


class StageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(..., min_length=1, max_length=MAX_LFNS)
    se: str = Field(..., description="the tape SE whose disk cache should hold the files")
    priority: int = Field(3, ge=1, le=5)
    pin_lifetime_s: float | None = Field(
        None, ge=60, le=MAX_PIN_LIFETIME_S,
        description="how long the staged copies stay pinned (default: the stager's setting); release sooner "
                    "with POST /requests/release")


class DeletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfns: list[str] = Field(..., min_length=1, max_length=MAX_LFNS)
    se: str | None = Field(None, description="delete the replica on this SE; omit to delete every replica")


class RequestSelection(BaseModel):
    """Requests named by id, or by the bulk submission they came in."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, max_length=MAX_LFNS)
    submission: str | None = None


async def authorized_lfns(
    db: AsyncDatabase[Document], principal: Principal, lfns: list[str], action: Action
) -> tuple[dict[str, str], dict[str, str]]:
    """The LFNs the caller may `action` (catalogue.authorization: r to copy or stage, w to
    delete a replica) with their file's GUID, and a reason for each other one (a hidden file is
    "no such file")."""
    failed: dict[str, str] = {}
    valid = []
    for lfn in dict.fromkeys(lfns):
        try:
            valid.append(check_lfn(lfn))
        except InvalidInput as exc:
            failed[lfn] = exc.message
    allowed, refused = await authorize_files(db, principal, valid, action)
    failed.update(refused)
    return {lfn: str(allowed[lfn].get("guid") or "") for lfn in valid if lfn in allowed}, failed


async def submit_authorized(
    db: AsyncDatabase[Document], principal: Principal, kind: rq.Kind, action: Action, lfns: list[str],
    item: dict[str, Any], **kw: Any,
) -> dict[str, Any]:
    """Queue requests for the LFNs the caller may `action`; each other LFN fails on its own.
    Authorized here, once, for the file each LFN names now: the daemons then act with these
    rights on that file only (its GUID, in the request), never on one registered there later."""
    permitted, refused = await authorized_lfns(db, principal, lfns, action)
    result = await queueing.submit(db, kind,
                                   [{"lfn": lfn, "guid": guid or None, **item} for lfn, guid in permitted.items()],
                                   requester=requester_of(principal), vo=vo_stamp(principal), **kw)
    result["failed"] = {**refused, **result["failed"]}
    return result


def requester_of(principal: Principal) -> str:
    return queueing.user_requester(principal.sub)


def visible_to(principal: Principal) -> dict[str, Any]:
    """Admins see every request of their VO (of every VO: global admins); others see those they
    asked for (owned or joined: `transfers.shared_requests`)."""
    return vo_query(principal) if principal.is_admin else of_requester(requester_of(principal))


def asked_by(principal: Principal, doc: Document) -> bool:
    """Did the caller ask for this request (its owner, or one who joined it)?"""
    return requester_of(principal) in (doc["requester"], *doc.get(rq.JOINED, ()))


async def dataset_lfns(db: AsyncDatabase[Document], principal: Principal, did: str) -> list[str]:
    """The files of a dataset, or of every dataset below a container, to replicate: those the
    caller can see, as `GET /dids/contents` lists them (a file behind a directory the caller
    cannot search is left out, not named in the answer; nor is one removed since it was attached).

    Listing a DID's contents needs `catalogue.read` (as `cairn dataset contents` does)."""
    if not principal.has_scope("catalogue.read"):
        raise Forbidden("replicating a dataset lists its contents: that needs the catalogue.read scope")
    lfns = await file_lfns(db, require_did(principal, did), limit=MAX_LFNS)
    if lfns and not principal.is_global_admin:
        seen = await visible_files(db, principal, lfns)
        lfns = [lfn for lfn in lfns if lfn in seen]
    if not lfns:
        raise InvalidInput(f"{did} holds no files; nothing queued", details={"dataset": did})
    return lfns


@routes.post("/requests/transfers", status=201, policy=scopes("transfers.write"), body=ReplicationRequest,
             summary="Replicate files, or a dataset's or container's files, to an SE (bulk, up to 100k LFNs)",
             responses={404: "unknown SE or dataset", 400: "invalid input"})
async def submit_replication(request: web.Request) -> web.Response:
    body = await read_model(request, ReplicationRequest)
    db = request.app[DATABASE]
    principal = principal_of(request)
    dest = await get_storage_element(db, require_se(principal, body.dest_se))
    if not dest.write_enabled:
        raise InvalidInput(f"SE {dest.name} is switched off for writing")
    if body.source_se:
        await get_storage_element(db, require_se(principal, body.source_se))
    lfns = body.lfns if body.dataset is None else await dataset_lfns(db, principal, body.dataset)
    # The VO's own switch on the SE (`cairn vo se`): refused now rather than queued and failed by
    # the worker; only the caller's VO's files are looked at (another VO's switches stay unseen).
    off = [lfn for lfn in lfns if within_reach(principal, lfn) and not dest.switched_on("write", lfn)]
    if off:
        raise InvalidInput(f"SE {dest.name} is switched off for writing {off[0]}'s VO"
                           + (f" (and {len(off) - 1} more files)" if len(off) > 1 else ""))
    result = await submit_authorized(db, principal, "transfer", REQUEST_TRANSFER, lfns,
                                     {"dest_se": body.dest_se, "source_se": body.source_se},
                                     activity=body.activity, priority=body.priority)
    if body.dataset is not None:
        result["dataset"] = body.dataset
    return json_response(result, status=201)


@routes.post("/requests/stages", status=201, policy=scopes("transfers.write"), body=StageRequest,
             summary="Bring files online from a tape SE into its disk cache")
async def submit_stage(request: web.Request) -> web.Response:
    body = await read_model(request, StageRequest)
    db = request.app[DATABASE]
    se = await get_storage_element(db, require_se(principal_of(request), body.se))
    if se.kind != "tape":
        raise InvalidInput(f"SE {se.name} is a {se.kind} SE; staging is for tape SEs")
    result = await submit_authorized(db, principal_of(request), "stage", REQUEST_STAGE, body.lfns,
                                     {"dest_se": body.se, "pin_lifetime_s": body.pin_lifetime_s},
                                     priority=body.priority)
    return json_response(result, status=201)


@routes.post("/requests/deletions", status=201, policy=scopes("transfers.write"), body=DeletionRequest,
             summary="Delete one replica, or every replica, of files")
async def submit_deletion(request: web.Request) -> web.Response:
    body = await read_model(request, DeletionRequest)
    db = request.app[DATABASE]
    principal = principal_of(request)
    if body.se is not None:
        await get_storage_element(db, require_se(principal, body.se))
    elif not principal.is_admin:
        raise Forbidden("deleting every replica of a file is for administrators; name an SE")
    result = await submit_authorized(db, principal, "delete", REQUEST_DELETION, body.lfns, {"dest_se": body.se})
    return json_response(result, status=201)


@routes.get("/requests", policy=scopes("transfers.read"), summary="List requests, newest first",
            query={"state": "one state", "kind": "transfer, stage or delete", "submission": "bulk submission id",
                   "lfn": "one LFN", "requester": "admins only: e.g. user:alice or job:ID", "limit": "at most 1000"},
            response=JsonList)
async def list_requests(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query: dict[str, Any] = visible_to(principal)
    for key in ("state", "kind", "lfn"):
        if key in request.query:
            query[key] = request.query[key]
    if "submission" in request.query:
        query = both(query, of_submission(request.query["submission"]))
    if "requester" in request.query:
        if not principal.is_admin and request.query["requester"] != requester_of(principal):
            raise Forbidden("only administrators may list other requesters' requests")
        query["requester"] = request.query["requester"]
    if request.query.get("state") not in (None, *rq.STATES):
        raise InvalidInput(f"unknown state {request.query['state']!r}; states: {', '.join(rq.STATES)}")
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    docs = await request_reads.list_requests(request.app[DATABASE], query, limit=limit)
    return json_response(docs)


@routes.get("/requests/{id}", policy=scopes("transfers.read"), summary="One request",
            responses={404: "no such request"})
async def get_request(request: web.Request) -> web.Response:
    doc = await rq.get_request(request.app[DATABASE], request.match_info["id"])
    principal = principal_of(request)
    if doc is None or not principal.sees_vo(doc.get("vo")) or (not principal.is_admin and not asked_by(principal, doc)):
        raise NotFound(f"request {request.match_info['id']} does not exist")
    return json_response(doc)


@routes.get("/submissions/{id}", policy=scopes("transfers.read"), summary="Progress of a bulk submission")
async def submission_progress(request: web.Request) -> web.Response:
    query = both(of_submission(request.match_info["id"]), visible_to(principal_of(request)))
    counts = await request_reads.progress(request.app[DATABASE], query)
    if counts["total"] == 0:
        raise NotFound(f"submission {request.match_info['id']} does not exist")
    return json_response({"submission": request.match_info["id"], "states": counts})


async def selected(request: web.Request, verb: str) -> dict[str, Any]:
    """The query for the requests a body names that the caller may act on."""
    body = await read_model(request, RequestSelection)
    if not body.ids and not body.submission:
        raise InvalidInput(f"name request ids or a submission to {verb}")
    query: dict[str, Any] = visible_to(principal_of(request))
    if body.ids:
        query = both(query, {"_id": {"$in": body.ids}})
    if body.submission:
        query = both(query, of_submission(body.submission))
    return query


@routes.post("/requests/cancel", policy=scopes("transfers.write"), body=RequestSelection,
             summary="Cancel open requests by id or by submission")
async def cancel_requests(request: web.Request) -> web.Response:
    principal, query = principal_of(request), await selected(request, "cancel")
    db = request.app[DATABASE]
    # an administrator cancels outright; a user withdraws (`transfers.shared_requests`)
    cancelled = await (cancellation.cancel(db, query) if principal.is_admin
                       else cancel_as(db, query, requester_of(principal)))
    return json_response({"cancelled": cancelled})


@routes.post("/requests/release", policy=scopes("transfers.write"), body=RequestSelection,
             summary="Release the pins of done stage requests (by id or submission); the stager drops them")
async def release_requests(request: web.Request) -> web.Response:
    principal, query = principal_of(request), await selected(request, "release")
    db = request.app[DATABASE]
    # as cancel: an administrator releases outright; a user withdraws, and the pin goes once
    # nobody who asked for the staged copy is left (`transfers.shared_requests`)
    asked = await (cancellation.ask_release(db, query) if principal.is_admin
                   else release_as(db, query, requester_of(principal)))
    return json_response({"release_asked": asked})


