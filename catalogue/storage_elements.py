"""Storage elements (SEs) and sites: the records, their validation and their queries.

An SE is stored under its name (`_id`). Its protocols say how its files are reached; the URL
of a replica is built from the preferred protocol and the LFN by `replica_url` unless the
replica names its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel
from pymongo.asynchronous.database import AsyncDatabase

from kernel.bounds import Int64, PositiveInt64, Size
from kernel.db import Document, IndexSpec, database_errors
from kernel.errors import Conflict, NotFound

SES = "storage_elements"
SITES = "sites"

INDEXES = [
    IndexSpec(SES, [("site", 1)], name="ses_by_site"),
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Scheme = Literal["file", "s3", "root", "dav", "davs", "http", "https", "tape"]
AttributeValue = str | Int64 | float | bool
OptionValue = str | Int64 | float | bool


def _attribute_keys(value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    for key in value:
        if not key or len(key) > 64 or not key.replace("_", "").isalnum():
            raise ValueError(f"attribute key {key!r} must be 1-64 letters, digits and underscores")
    return value


Attributes = Annotated[dict[str, AttributeValue], AfterValidator(_attribute_keys)]


class Protocol(BaseModel):
    """One way to reach an SE's files."""

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme
    host: str = ""
    port: int | None = Field(None, ge=1, le=65535)
    prefix: str = Field(..., min_length=1, description="path under which LFNs are placed")
    read: bool = True
    write: bool = True
    delete: bool = True
    third_party_copy: bool = False
    priority: PositiveInt64 = Field(1, description="1 is preferred")
    extra: dict[str, OptionValue] = Field(
        default_factory=dict, description="storage-plugin options (strings, integers, numbers or booleans), "
        "e.g. s3 endpoint_url and region, davs ca_file, tape cache_dir and stage_delay_s")

    def base_url(self) -> str:
        if self.scheme in ("file", "tape"):
            return f"{self.scheme}://{self.prefix.rstrip('/')}"
        netloc = self.host + (f":{self.port}" if self.port else "")
        sep = "" if self.prefix.startswith("/") else "/"
        if self.scheme == "root":
            sep = "/" + sep  # root://host//absolute/path
        return f"{self.scheme}://{netloc}{sep}{self.prefix.rstrip('/')}"


class Space(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total_bytes: Size | None = None
    used_bytes: Size | None = None
    high_water: float = Field(0.9, gt=0, le=1)
    low_water: float = Field(0.8, gt=0, le=1)


class StorageElement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME_PATTERN)
    site: str = Field(..., pattern=NAME_PATTERN)
    kind: Literal["disk", "tape"] = "disk"
    protocols: list[Protocol] = Field(..., min_length=1, max_length=64)
    attributes: Attributes = Field(default_factory=dict)
    read_enabled: bool = True
    write_enabled: bool = True
    delete_enabled: bool = True
    space: Space = Field(default_factory=Space)

    def preferred_protocol(self, operation: Literal["read", "write", "delete"] = "read") -> Protocol | None:
        usable = [p for p in self.protocols if getattr(p, operation)]
        return min(usable, key=lambda p: p.priority) if usable else None

    def to_document(self) -> Document:
        doc = self.model_dump(mode="python")
        doc["_id"] = doc.pop("name")
        return doc

    @classmethod
    def from_document(cls, doc: Document) -> StorageElement:
        data = {k: v for k, v in doc.items() if k not in ("_id", "created", "modified")}
        return cls(name=doc["_id"], **data)


class StorageElementList(RootModel[list[StorageElement]]):
    """Storage elements as GET /ses answers them."""


def replica_url(protocol: Protocol, lfn: str) -> str:
    """The deterministic URL of an LFN on an SE: the protocol's base URL followed by the LFN."""
    return protocol.base_url() + lfn


async def put_storage_element(db: AsyncDatabase[Document], se: StorageElement) -> None:
    """Create or replace an SE (and make sure its site exists)."""
    now = dt.datetime.now(dt.UTC)
    doc = se.to_document()
    with database_errors():
        await db[SES].update_one(
            {"_id": se.name}, {"$set": {**doc, "modified": now}, "$setOnInsert": {"created": now}}, upsert=True
        )
        await db[SITES].update_one({"_id": se.site}, {"$setOnInsert": {"created": now}}, upsert=True)


async def get_storage_element(db: AsyncDatabase[Document], name: str) -> StorageElement:
    with database_errors():
        doc = await db[SES].find_one({"_id": name})
    if doc is None:
        raise NotFound(f"storage element {name!r} does not exist")
    return StorageElement.from_document(doc)


class StorageElementUpdate(BaseModel):
    """The parts of an SE an operator switches often: read/write/delete, space, attributes."""

    model_config = ConfigDict(extra="forbid")

    read_enabled: bool | None = None
    write_enabled: bool | None = None
    delete_enabled: bool | None = None
    space: Space | None = None
    attributes: Attributes | None = None


async def update_storage_element(
    db: AsyncDatabase[Document], name: str, update: StorageElementUpdate
) -> StorageElement:
    """Change the switches, space figures or attributes of an existing SE."""
    changes = update.model_dump(mode="python", exclude_none=True)
    if "attributes" in changes:
        StorageElement.model_validate({**(await get_storage_element(db, name)).model_dump(), **changes})
    with database_errors():
        doc = await db[SES].find_one_and_update(
            {"_id": name}, {"$set": {**changes, "modified": dt.datetime.now(dt.UTC)}}, return_document=True
        )
    if doc is None:
        raise NotFound(f"storage element {name!r} does not exist")
    return StorageElement.from_document(doc)


async def delete_storage_element(db: AsyncDatabase[Document], name: str) -> None:
    """Remove an SE that holds no replica any more."""
    await get_storage_element(db, name)
    with database_errors():
        # Index: files_by_replica_se_lfn.
        holding = await db["files"].count_documents({"replicas.se": name}, limit=1)
        if holding:
            raise Conflict(f"storage element {name!r} still holds replicas; remove or move them first")
        await db[SES].delete_one({"_id": name})


async def list_storage_elements(db: AsyncDatabase[Document], **filters: Any) -> list[StorageElement]:
    with database_errors():
        docs = await db[SES].find({k: v for k, v in filters.items() if v is not None}).sort("_id", 1).to_list()
    return [StorageElement.from_document(d) for d in docs]


async def fetch_storage_elements(db: AsyncDatabase[Document], names: Iterable[str]) -> dict[str, StorageElement]:
    """The existing SEs among `names`, in one `_id $in` query."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with database_errors():
        cursor = db[SES].find({"_id": {"$in": wanted}}).limit(len(wanted)).batch_size(len(wanted))
        docs = await cursor.to_list()
    return {d["_id"]: StorageElement.from_document(d) for d in docs}
