"""Shapes of the API's answers that the OpenAPI document publishes (`response=` on a route):
the one error body every 4xx/5xx carries, and the per-item answer of bulk calls; and the one
request body several packages share (`RebuildBody`). Routes with bodies of their own name a
model from their package; these are the shared ones."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class ErrorBody(BaseModel):
    """Every error: a stable `code` (kernel.errors), a message for people, optional details."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    details: dict[str, Any] | None = None


class BulkAnswer(BaseModel):
    """A bulk call's answer per item: what succeeded (by key) and why the others failed."""

    model_config = ConfigDict(extra="allow")

    successful: dict[str, Any]
    failed: dict[str, Any] = Field(description="item -> reason")


class JsonObject(BaseModel):
    """A JSON object whose fields the route's summary describes."""

    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    """GET /health: `degraded` (503, with an error code) when the database does not answer."""

    model_config = ConfigDict(extra="allow")

    status: str
    database: str
    version: str


class JsonList(RootModel[list[dict[str, Any]]]):
    """A JSON array of objects whose fields the route's summary describes."""


class Whoami(BaseModel):
    """GET /whoami: the identity a token carries, as this installation sees it (identity is
    (vo, sub); `global_admin`: admin of the whole installation, not of one VO; `roots`: the
    namespace roots of the caller's VO when it is confined to them)."""

    sub: str
    vo: str
    groups: list[str]
    scopes: list[str]
    issuer: str
    admin: bool
    global_admin: bool
    qualified_groups: list[str]
    roots: list[str]


class RebuildBody(BaseModel):
    """POST of an administrators' recount (usage, quotas, job counters): `fix: false` only reports."""

    model_config = ConfigDict(extra="forbid")

    fix: bool = True
