"""HTTP route to report a replica found missing on storage (anyone who may read the file)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue.authorization import READ_FILE, require_file
from kernel.errors import NotFound
from kernel.web import DATABASE, SETTINGS, ApiRoutes, json_response, principal_of, read_model, scopes
from transfers.suspicious import confirm_and_report

routes = ApiRoutes("replica-health")


class SuspiciousBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lfn: str = Field(..., min_length=1, max_length=4096)
    se: str = Field(..., min_length=1, max_length=64)
    reason: str = Field("", max_length=500)


class SuspiciousAnswer(BaseModel):
    """What became of the report: suspicious or lost (counted), present or unverified (not)."""

    lfn: str
    se: str
    state: str


@routes.post("/replicas/suspicious", policy=scopes("catalogue.read"),
             summary="Report a replica found missing on storage; counted once the server finds it missing too",
             body=SuspiciousBody, responses={404: "no such file (or hidden), or no replica on that SE"},
             response=SuspiciousAnswer)
async def suspicious(request: web.Request) -> web.Response:
    body = await read_model(request, SuspiciousBody)
    db, settings = request.app[DATABASE], request.app[SETTINGS]
    doc = await require_file(db, principal_of(request), body.lfn, READ_FILE)
    replica = next((r for r in doc.get("replicas", []) if r.get("se") == body.se), None)
    if replica is None:
        raise NotFound(f"{body.lfn} has no replica on {body.se}")
    state = await confirm_and_report(db, body.lfn, body.se, replica,
                                     credentials=settings.storage_credentials,
                                     threshold=settings.audit.suspicious_threshold,
                                     reason=body.reason or f"reported by {principal_of(request).sub}")
    return json_response({"lfn": body.lfn, "se": body.se, "state": state})
