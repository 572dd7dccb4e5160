"""Server-side signing (as Rucio does): a time-limited URL for one replica on an S3 SE, so a
client without that SE's secrets can read or write the bytes the catalogue lets it.

- GET: r on the file, and its replica on the SE is `available`;
- PUT: w on the file, and its replica is `copying` (an upload registers first, then asks);
- DELETE: as PUT, so a failed upload can remove what it wrote before undoing its registration.
The server signs with its own `CAIRN_STORAGE_CREDENTIALS`; the URL grants only that method on
that object, for at most a day.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue.authorization import READ_FILE, WRITE_REPLICAS, require_file
from catalogue.lfn import check_lfn
from catalogue.storage_elements import get_storage_element
from catalogue.storage_paths import storage_lfn
from kernel.errors import Conflict, Forbidden, NotFound
from kernel.web import DATABASE, SETTINGS, ApiRoutes, json_response, principal_of, read_model, scopes
from storage_plugins.errors import NotSupported
from storage_plugins.registry import plugin_for
from transfers.endpoints import endpoints

routes = ApiRoutes("storage")
READ_SCOPE = scopes("catalogue.read")
Method = Literal["GET", "PUT", "DELETE"]


class SignedUrlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str
    se: str = Field(..., min_length=1)
    method: Method = "GET"
    lifetime_s: int = Field(3600, ge=60, le=24 * 3600)


@routes.post("/storage/signed-url", policy=READ_SCOPE, summary="A time-limited URL for a replica on an S3 SE",
             body=SignedUrlBody,
             responses={403: "no permission on the file (or no catalogue.write scope to write)",
                        404: "no such file or no replica on that SE", 409: "the replica is not in the right state",
                        501: "the SE has no S3 protocol for this operation"})
async def signed_url(request: web.Request) -> web.Response:
    body = await read_model(request, SignedUrlBody)
    principal = principal_of(request)
    lfn = check_lfn(body.lfn)
    writing = body.method != "GET"
    if writing and not principal.has_scope("catalogue.write"):
        raise Forbidden("a PUT or DELETE URL needs the catalogue.write scope")
    db = request.app[DATABASE]
    doc = await require_file(db, principal, lfn, WRITE_REPLICAS if writing else READ_FILE)
    replica = next((r for r in doc.get("replicas", []) if r.get("se") == body.se), None)
    if replica is None:
        raise NotFound(f"{lfn} has no replica on SE {body.se}")
    wanted = "copying" if writing else "available"
    if replica.get("status") != wanted:
        raise Conflict(f"the replica of {lfn} on SE {body.se} is {replica.get('status')}; "
                       f"{body.method} URLs are given for {wanted} replicas only")
    se = await get_storage_element(db, body.se)
    eps = endpoints(se, storage_lfn(lfn, replica), "write" if writing else "read",
                    credentials=request.app[SETTINGS].storage_credentials, registered_url=replica.get("url"))
    s3 = [ep for ep in eps if ep.scheme == "s3"]
    if not s3:
        raise NotSupported(f"SE {se.name} has no S3 protocol to sign a {body.method} URL for {lfn}")
    url = await plugin_for(s3[0].url, s3[0].options).signed_url(s3[0].url, method=body.method,
                                                                 lifetime_s=body.lifetime_s)
    return json_response({"lfn": lfn, "se": se.name, "method": body.method, "url": url,
                          "expires_in": body.lifetime_s})
