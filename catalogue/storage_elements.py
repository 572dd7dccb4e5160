"""Storage elements (SEs) and sites: the records, their validation and their queries.

An SE is stored under its name (`_id`). Its protocols say how its files are reached; the URL
of a replica is built from the preferred protocol and the LFN by `replica_url` unless the
replica names its own. An SE that serves several VOs places each VO's files under the VO's
path there (`catalogue.vos.VoSe.path`): an SE loaded here carries them as `vo_paths` (VO root
-> path below every protocol's prefix), so the derived URL of `/cta/x` is `<prefix>/<path>/cta/x`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, RootModel, model_validator

from catalogue.lfn import is_within
from kernel.bounds import Int64, PositiveInt64, Size
from kernel.documents import Document, IndexSpec, database_errors, one_reply
from kernel.errors import Conflict, InvalidInput, NotFound
from kernel.secret_options import SECRET_OPTIONS

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from kernel.principal import Principal

SES = "storage_elements"
SITES = "sites"
VOS = "vos"  # the VO registry, written by catalogue.vos (defined here: read for the VOs' paths on each SE)
VO_PATHS_CACHE_S = 2.0
VO_FIELDS = ("vo_paths", "vo_switched_off")  # filled from the VO registry, never stored with the SE
OPERATIONS = ("read", "write", "delete")

INDEXES = [
    IndexSpec(SES, [("site", 1)], name="ses_by_site"),
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Operation = Literal["read", "write", "delete"]
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
    _vo_paths: dict[str, str] = PrivateAttr(default_factory=dict)  # set from StorageElement.vo_paths

    def physical_path(self, lfn: str) -> str:
        """Where lfn lies below the prefix: under the path of the VO whose root is longest above it."""
        # Read where pydantic keeps it: `self._vo_paths` goes through pydantic's attribute
        # fallback (~5 us, a failed descriptor probe), and this runs for every URL built.
        vo_paths: dict[str, str] = (self.__pydantic_private__ or {}).get("_vo_paths", {})
        roots = [root for root in vo_paths if is_within(lfn, root)]
        if not roots:
            return lfn
        return vo_paths[max(roots, key=len)].rstrip("/") + lfn

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
    vo_paths: dict[str, str] = Field(
        default_factory=dict, description="read-only, from the VO registry: VO root -> the VO's path below every "
        "protocol's prefix (files under the root are placed there); ignored when an SE is written")
    vo_switched_off: dict[str, list[Operation]] = Field(
        default_factory=dict, description="read-only, from the VO registry: VO root -> the operations that VO's "
        "admins switched off on this SE for its files; ignored when an SE is written")

    @model_validator(mode="after")
    def _place_vo_paths(self) -> StorageElement:
        for protocol in self.protocols:
            protocol._vo_paths = self.vo_paths
        return self

    def switched_on(self, operation: Operation, lfn: str) -> bool:
        """May `operation` act on lfn here: the SE's own switch and that of lfn's VO (longest root)."""
        if not getattr(self, f"{operation}_enabled"):
            return False
        roots = [root for root in self.vo_switched_off if is_within(lfn, root)]
        return not roots or operation not in self.vo_switched_off[max(roots, key=len)]

    def preferred_protocol(self, operation: Operation = "read") -> Protocol | None:
        usable = [p for p in self.protocols if getattr(p, operation)]
        return min(usable, key=lambda p: p.priority) if usable else None

    def to_document(self) -> Document:
        doc = self.model_dump(mode="python", exclude=set(VO_FIELDS))
        doc["_id"] = doc.pop("name")
        return doc

    @classmethod
    def from_document(cls, doc: Document, vo_paths: dict[str, str] | None = None,
                      vo_switched_off: dict[str, list[str]] | None = None) -> StorageElement:
        data = {k: v for k, v in doc.items() if k not in ("_id", "created", "modified", *VO_FIELDS)}
        return cls(name=doc["_id"], **data, vo_paths=vo_paths or {}, vo_switched_off=vo_switched_off or {})


class StorageElementList(RootModel[list[StorageElement]]):
    """Storage elements as GET /ses answers them."""


def replica_url(protocol: Protocol, lfn: str) -> str:
    """The deterministic URL of an LFN on an SE: the protocol's base URL followed by the LFN
    (below the path of the LFN's VO on an SE that gives VOs paths)."""
    return protocol.base_url() + protocol.physical_path(lfn)


_vo_uses_cache: dict[str, tuple[float, dict[str, tuple[dict[str, str], dict[str, list[str]]]]]] = {}


def forget_vo_uses(db: AsyncDatabase[Document]) -> None:
    """Drop this process's copy of the VOs' paths and switches (`catalogue.vos` calls it on every change)."""
    _vo_uses_cache.pop(db.name, None)


async def vo_uses(db: AsyncDatabase[Document]) -> dict[str, tuple[dict[str, str], dict[str, list[str]]]]:
    """SE name -> ({VO root -> the VO's path there}, {VO root -> operations the VO's admins
    switched off there}), from the VO registry (cached briefly). An SE where no VO has a path
    other than `/` has no paths; one where some VO has lists every VO's root (`/` for no path)."""
    cached = _vo_uses_cache.get(db.name)
    if cached is not None and time.monotonic() - cached[0] < VO_PATHS_CACHE_S:
        return cached[1]
    with database_errors():
        docs = await db[VOS].find({}, {"roots": 1, "ses": 1}).to_list()
    uses: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {}
    for vo in docs:
        for se, use in (vo.get("ses") or {}).items():
            paths, off = uses.setdefault(se, ({}, {}))
            stopped = [op for op in OPERATIONS if not (use or {}).get(f"{op}_enabled", True)]
            for root in vo.get("roots", []):
                if (use or {}).get("path", "/").rstrip("/"):
                    paths[root] = use["path"]
                if stopped:
                    off[root] = stopped
    every_root = [root for vo in docs for root in vo.get("roots", [])]
    for paths, _ in uses.values():
        if paths:  # another VO's root nested in one with a path keeps its files where they are
            paths.update({root: paths.get(root, "/") for root in every_root})
    _vo_uses_cache[db.name] = (time.monotonic(), uses)
    return uses


async def _loaded(db: AsyncDatabase[Document], docs: list[Document]) -> list[StorageElement]:
    uses = await vo_uses(db) if docs else {}
    return [StorageElement.from_document(d, *uses.get(d["_id"], ({}, {}))) for d in docs]


def refuse_secrets(se: StorageElement) -> None:
    """Refuse an SE whose protocols' plugin options hold a secret (`kernel.secret_options`): its
    record is shown to every user (GET /ses, the portal). The error names the option, never its value."""
    found = sorted({name for protocol in se.protocols for name in SECRET_OPTIONS.intersection(protocol.extra)})
    if found:
        raise InvalidInput(f"{', '.join(found)}: a secret, not stored in the SE's record (every user reads it); "
                           "give it to the servers and daemons in CAIRN_STORAGE_CREDENTIALS")


async def put_storage_element(db: AsyncDatabase[Document], se: StorageElement) -> None:
    """Create or replace an SE (and make sure its site exists); one holding a secret is refused
    (`refuse_secrets`)."""
    refuse_secrets(se)
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
    return (await _loaded(db, [doc]))[0]


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
    return (await _loaded(db, [doc]))[0]


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
    return await _loaded(db, docs)


async def fetch_storage_elements(db: AsyncDatabase[Document], names: Iterable[str]) -> dict[str, StorageElement]:
    """The existing SEs among `names`, in one `_id $in` query."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with database_errors():
        cursor = db[SES].find({"_id": {"$in": wanted}}).limit(len(wanted)).batch_size(one_reply(len(wanted)))
        docs = await cursor.to_list()
    return {se.name: se for se in await _loaded(db, docs)}


def shown_to(principal: Principal, se: StorageElement) -> dict[str, Any]:
    """An SE as the caller sees it (the API's and the portal's): a VO-confined caller sees its own
    VO's path and switches only."""
    shown = se.model_dump(mode="json")
    for protocol in shown.get("protocols") or []:  # a record stored before secrets were refused
        protocol["extra"] = {k: v for k, v in (protocol.get("extra") or {}).items() if k not in SECRET_OPTIONS}
    if principal.confined:
        for name in VO_FIELDS:
            shown[name] = {root: v for root, v in shown[name].items() if root in principal.roots}
    return shown

