"""HTTP routes of token revocation (`kernel.token_revocation` says who may revoke what)."""

from __future__ import annotations

import datetime as dt
from typing import Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from kernel.revocations import from_document, list_revocations
from kernel.token_revocation import Revoking, jti_revocation, revoke, subject_revocation, token_revocation
from kernel.web import (
    AUTHENTICATED,
    DATABASE,
    ApiRoutes,
    json_response,
    principal_of,
    query_int,
    read_model,
    scopes,
)

routes = ApiRoutes("tokens")
NAME = r"^[^\x00-\x1f\x7f]+$"  # no control characters: shown to admins in listings


class RevokeBody(BaseModel):
    """Exactly one of `jti`, `token` (the token itself) or `user` (every token of that user
    issued before now); `issuer` narrows a jti and names the user's issuer (default: yours)."""

    model_config = ConfigDict(extra="forbid")

    jti: str | None = Field(None, min_length=1, max_length=256, pattern=NAME)
    token: str | None = Field(None, min_length=1, max_length=16384)
    user: str | None = Field(None, min_length=1, max_length=256, pattern=NAME)
    issuer: str | None = Field(None, min_length=1, max_length=1000, pattern=NAME)

    @model_validator(mode="after")
    def _one(self) -> Self:
        given = [name for name in ("jti", "token", "user") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of jti, token, user")
        if self.token is not None and self.issuer is not None:
            raise ValueError("a token names its own issuer")
        return self


class Revoked(BaseModel):
    """An entry: what it refuses (`user`, `vo`, `issuer` null: any), until `expires`."""

    kind: Literal["jti", "subject"]
    jti: str | None
    issuer: str | None
    user: str | None
    vo: str | None
    not_before: int | None = Field(description="subject: tokens issued before this (Unix time) are refused")
    expires: dt.datetime


class RevokedEntry(Revoked):
    """An entry as listed: who made it last, and when (the database's clock)."""

    by: dict[str, str]
    changed: dt.datetime


class RevokedList(RootModel[list[RevokedEntry]]):
    """Live revocations, newest first."""


@routes.post("/tokens/revocations", policy=AUTHENTICATED, body=RevokeBody, response=Revoked,
             summary="Revoke a token by its jti (within your reach; the answer never says whether such a "
                     "token exists), a token given whole (whoever holds it), or every token of a user "
                     "issued before now (yourself; a VO's admin its users; a global admin anyone)",
             responses={422: "you hold too many live revocations"})
async def revoke_tokens(request: web.Request) -> web.Response:
    body = await read_model(request, RevokeBody)
    principal = principal_of(request)
    revoking = Revoking.of(request)
    if body.jti is not None:
        entry = jti_revocation(principal, body.jti, body.issuer, revoking.keep_s)
    elif body.token is not None:
        entry = await token_revocation(revoking.verifier, body.token)
    else:
        entry = subject_revocation(principal, body.user or "", body.issuer, revoking.keep_s)
    return json_response((await revoke(revoking, principal, entry)).to_json())


@routes.get("/tokens/revocations", policy=scopes("admin"), response=RevokedList, query={"limit": "at most (1000)"},
            summary="Live revocations, newest first (a VO's admin: those reaching only its VO)")
async def list_tokens_revoked(request: web.Request) -> web.Response:
    principal = principal_of(request)
    limit = query_int(request, "limit", 1000, minimum=1, maximum=10_000)
    found = await list_revocations(request.config_dict[DATABASE], vo=None if principal.is_global_admin
                                   else principal.vo, limit=limit)
    return json_response([from_document(doc).to_json() | {"by": doc["by"], "changed": doc["changed"]}
                          for doc in found])
