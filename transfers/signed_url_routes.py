"""Server-side signing (as Rucio does): a time-limited URL for one replica on an S3 SE, so a
client without that SE's secrets can read or write the bytes the catalogue lets it.

- GET: r on the file, and its replica on the SE is `available` (a URL for up to a day);
- PUT: w on the file, and its replica is `copying` (an upload registers first, then asks). The
  URL lives at most WRITE_LIFETIME_S and is signed for the registered size and for creating the
  object only (`CREATE_ONLY_HEADERS`, which the client must send): a URL cannot be revoked, so
  one kept after its file was removed must not overwrite the object of a file registered at the
  same LFN later, nor store more bytes than were registered (and counted against the quota).
- a GET URL is signed with the object's entity tag (If-Match, which the client must send): kept
  after its file was removed, it does not read the object of a file registered at the same LFN
  later, whose reader may be someone else;
- no DELETE URL: a failed upload asks the server to delete what it wrote (`POST
  /storage/discard`, checked like a PUT at that moment, and naming the upload's `writer` token:
  a replica another upload, or a transfer, holds is refused, its object being that writer's),
  so no capability to delete an object outlives the check.
The server signs and deletes with its own `CAIRN_STORAGE_CREDENTIALS`.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue.authorization import READ_FILE, WRITE_REPLICAS, require_file
from catalogue.lfn import check_lfn
from catalogue.storage_elements import get_storage_element
from catalogue.storage_paths import storage_lfn
from catalogue.writer_tokens import IN_PROGRESS, TRANSFER, WRITER, writer_digest
from kernel.db import Document
from kernel.errors import Conflict, Forbidden, NotFound
from kernel.principal import Principal
from kernel.web import DATABASE, SETTINGS, ApiRoutes, json_response, principal_of, read_model, scopes
from storage_plugins.base import CREATE_ONLY_HEADERS
from storage_plugins.errors import NotSupported
from storage_plugins.registry import plugin_for
from transfers.endpoints import Endpoint, endpoints

routes = ApiRoutes("storage")
READ_SCOPE = scopes("catalogue.read")
WRITE_SCOPE = scopes("catalogue.write")
Method = Literal["GET", "PUT"]
WRITE_LIFETIME_S = 600


class SignedUrlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    se: str = Field(..., min_length=1)
    method: Method = "GET"
    lifetime_s: int = Field(3600, ge=60, le=24 * 3600)


class DiscardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    se: str = Field(..., min_length=1)
    writer: str | None = Field(None, min_length=16, max_length=64,
                               description="the upload's own token (`/replicas/hold`): without it, only a replica "
                                           "no writer holds is discarded")


async def _s3_replica(request: web.Request, principal: Principal, raw_lfn: str, se_name: str,
                      writing: bool) -> tuple[str, int, Endpoint, Document]:
    """The LFN, the registered size, the S3 endpoint of its replica on SE se_name and that
    replica, if the caller may read it (available) or, writing, change it (copying)."""
    lfn = check_lfn(raw_lfn)
    if writing and not principal.has_scope("catalogue.write"):
        raise Forbidden("writing or deleting through the server needs the catalogue.write scope")
    db = request.app[DATABASE]
    doc = await require_file(db, principal, lfn, WRITE_REPLICAS if writing else READ_FILE)
    replica = next((r for r in doc.get("replicas", []) if r.get("se") == se_name), None)
    if replica is None:
        raise NotFound(f"{lfn} has no replica on SE {se_name}")
    wanted = "copying" if writing else "available"
    if replica.get("status") != wanted:
        raise Conflict(f"the replica of {lfn} on SE {se_name} is {replica.get('status')}; "
                       f"this is given for {wanted} replicas only")
    se = await get_storage_element(db, se_name)
    eps = endpoints(se, storage_lfn(lfn, replica), "write" if writing else "read",
                    credentials=request.app[SETTINGS].storage_credentials, registered_url=replica.get("url"))
    s3 = [ep for ep in eps if ep.scheme == "s3"]
    if not s3:
        raise NotSupported(f"SE {se.name} has no S3 protocol to reach {lfn} through the server")
    return lfn, int(doc.get("size") or 0), s3[0], replica


def _check_holder(lfn: str, se: str, replica: Document, writer: str | None) -> None:
    """Refuse (Conflict, `in progress`) a replica held by another writer than the caller's upload
    (another upload, a transfer: `catalogue.upload_leases`), whose object is that writer's,
    maybe written already and about to be flipped `available`. A caller naming no writer (a
    client from before the holds) is given only a replica that no writer holds."""
    held = replica.get(WRITER)
    if held is not None and (writer is None or held != writer_digest(writer)):
        who = "a transfer is copying" if held == TRANSFER else "another upload is writing"
        raise Conflict(f"{IN_PROGRESS}: {who} {lfn} to SE {se}; what is there is not this upload's to discard")


@routes.post("/storage/signed-url", policy=READ_SCOPE, summary="A time-limited URL for a replica on an S3 SE",
             body=SignedUrlBody,
             responses={403: "no permission on the file (or no catalogue.write scope to write)",
                        404: "no such file or no replica on that SE", 409: "the replica is not in the right state",
                        501: "the SE has no S3 protocol for this operation"})
async def signed_url(request: web.Request) -> web.Response:
    body = await read_model(request, SignedUrlBody)
    writing = body.method == "PUT"
    lfn, size, ep, _ = await _s3_replica(request, principal_of(request), body.lfn, body.se, writing)
    lifetime = min(body.lifetime_s, WRITE_LIFETIME_S) if writing else body.lifetime_s
    plugin = plugin_for(ep.url, ep.options)
    if writing:
        url = await plugin.signed_url(ep.url, method="PUT", lifetime_s=lifetime, size=size, create_only=True)
        headers = dict(CREATE_ONLY_HEADERS)
    else:  # pinned to the object there now (see above)
        etag = await plugin.entity_tag(ep.url)
        url = await plugin.signed_url(ep.url, method="GET", lifetime_s=lifetime, if_match=etag)
        headers = {"If-Match": etag}
    return json_response({"lfn": lfn, "se": body.se, "method": body.method, "url": url, "expires_in": lifetime,
                          "headers": headers})


@routes.post("/storage/discard", policy=WRITE_SCOPE, summary="Delete what an upload wrote to an S3 SE",
             body=DiscardBody,
             responses={403: "no w permission on the file", 404: "no such file or no replica on that SE",
                        409: "the replica is not being written (copying), or another writer holds it",
                        501: "the SE has no S3 protocol"})
async def discard(request: web.Request) -> web.Response:
    """The object of a `copying` replica deleted by the server, for a client that wrote it
    through a signed URL and failed (nothing there is fine), while that replica is the
    client's upload's (`writer`) or no writer's."""
    body = await read_model(request, DiscardBody)
    lfn, _, ep, replica = await _s3_replica(request, principal_of(request), body.lfn, body.se, writing=True)
    _check_holder(lfn, body.se, replica, body.writer)
    plugin = plugin_for(ep.url, ep.options)
    with contextlib.suppress(NotFound):
        await plugin.delete(ep.url)
    return json_response({"lfn": lfn, "se": body.se, "discarded": True})
