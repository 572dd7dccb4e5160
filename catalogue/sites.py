"""Sites: where jobs run. Each site has SEs local to it (an SE names its site)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase

from catalogue.authorization import se_in_vo
from catalogue.storage_elements import NAME_PATTERN, SES, SITES, Attributes, list_storage_elements, shown_to
from kernel.db import Document, database_errors
from kernel.errors import Conflict, NotFound
from kernel.principal import Principal


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN)
    description: str = Field("", max_length=1000)
    attributes: Attributes = Field(default_factory=dict)


def _site(doc: Document) -> Site:
    return Site(name=doc["_id"], description=doc.get("description", ""), attributes=doc.get("attributes", {}))


async def put_site(db: AsyncDatabase[Document], site: Site) -> Site:
    """Create or replace a site."""
    at = dt.datetime.now(dt.UTC)
    fields = site.model_dump(exclude={"name"})
    with database_errors():
        await db[SITES].update_one(
            {"_id": site.name}, {"$set": {**fields, "modified": at}, "$setOnInsert": {"created": at}}, upsert=True
        )
    return site


async def list_sites(db: AsyncDatabase[Document]) -> list[Site]:
    with database_errors():
        docs = await db[SITES].find().sort("_id", 1).to_list()
    return [_site(d) for d in docs]


async def get_site(db: AsyncDatabase[Document], name: str, principal: Principal) -> dict[str, Any]:
    """A site with the SEs local to it that the caller's VO uses, as it sees them (another VO's
    SEs there are left out, as `GET /ses` leaves them out)."""
    with database_errors():
        doc = await db[SITES].find_one({"_id": name})
    if doc is None:
        raise NotFound(f"site {name!r} does not exist")
    ses = await list_storage_elements(db, site=name)  # Index: ses_by_site.
    return {**_site(doc).model_dump(), "ses": [shown_to(principal, se) for se in ses if se_in_vo(principal, se.name)]}


async def delete_site(db: AsyncDatabase[Document], name: str) -> None:
    """Remove a site that has no SE any more."""
    with database_errors():
        if await db[SES].count_documents({"site": name}, limit=1):
            raise Conflict(f"site {name!r} still has storage elements; remove or move them first")
        result = await db[SITES].delete_one({"_id": name})
    if result.deleted_count == 0:
        raise NotFound(f"site {name!r} does not exist")
